//! See Cargo.toml: this crate only unifies features.
