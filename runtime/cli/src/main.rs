fn main() {
    // Wasmtime makes an error each time it drops a call's store (disposing of the call's
    // fiber); where RUST_BACKTRACE is set, each would capture a backtrace: 10–20 µs of a
    // 80–100 µs call. RUST_LIB_BACKTRACE governs only errors, so panics keep theirs; an
    // operator who sets it keeps what they set.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first thing the process does, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    std::process::exit(warden_cli::main());
}
