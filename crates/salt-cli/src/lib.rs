//! The library behind the `salt` binary: backend selection and one module per subcommand, so that
//! `xtask` and tests can call the same code as the command line.

pub mod backend;
pub use salt_core::alloc::keep_freed_memory;
pub mod bench;
pub mod cmd;
pub mod plot;
pub mod table1;
pub mod train;
