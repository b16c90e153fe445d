//! End-to-end tests: real gateway and nodes on loopback (one test binary,
//! one module per concern).

mod audit;
mod audit_crash;
mod catalogue;
mod consent;
mod deploy;
mod dpo;
mod enrolment;
mod exchanges;
mod foundation;
mod hostile;
mod policy;
mod python_client;
mod sealed;
mod transcryptors;
mod unavailable;
mod upgrade;
