//! Hostile: tries raw sockets and name lookups, which Warden never grants.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

struct HostileNet;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
    /// host:port to aim at.
    #[serde(default)]
    target: String,
}

fn outcome<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> Value {
    match r {
        Ok(_) => json!({ "escaped": true, "detail": format!("{what} succeeded") }),
        Err(e) => json!({ "escaped": false, "detail": format!("{what}: {e:?}") }),
    }
}

impl Tool for HostileNet {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-net";
    const DESCRIPTION: &'static str = "Tries TCP, UDP and DNS directly.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let target = input.target.as_str();
        Ok(match input.attack.as_str() {
            "tcp" => outcome("tcp connect", TcpStream::connect(target)),
            "tcp-listen" => outcome("tcp bind", std::net::TcpListener::bind("0.0.0.0:0")),
            "udp" => outcome(
                "udp send",
                UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"hello", target)),
            ),
            "dns" => outcome(
                "lookup",
                target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()),
            ),
            other => return Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        })
    }
}

host_api::export_tool!(HostileNet);
