//! Testing code that uses this crate without a platform (the `testing` feature): an
//! [`Emulator`] of the Platform API on 127.0.0.1, its requests and answers checked
//! against Heroku's published JSON schema ([`Schema`]) when the schema file is given.
//!
//! ```rust,no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bluegreen_paas::testing::{Emulator, EmulatorOptions};
//!
//! let emu = Emulator::start_with(
//!     EmulatorOptions::new().with_schema("heroku-platform-api-schema.json"),
//! )
//! .await?;
//! let client = emu.client(); // a PlatformClient of the emulator
//! # drop(client);
//! # Ok(())
//! # }
//! ```

mod emulator;
mod raw;
mod schema;

pub use emulator::{Emulator, EmulatorError, EmulatorOptions, Hang, TOKEN};
pub use raw::RawClient;
pub use schema::{Schema, SchemaError, SCHEMA_ENV};
