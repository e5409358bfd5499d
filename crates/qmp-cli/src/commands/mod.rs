//! One file per subcommand.

pub mod codegen;
pub mod demo;
pub mod events;
pub mod exec;
pub mod ga;
pub mod info;
pub mod job;
pub mod mock;
pub mod proxy;
pub mod qom;
mod qom_fuse;
pub mod replay;
pub mod schema;
pub mod shell;
mod shell_complete;
mod shell_parse;
pub mod transcript;
