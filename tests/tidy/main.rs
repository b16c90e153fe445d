//! Tidy checks (see tidy/main.rs).
