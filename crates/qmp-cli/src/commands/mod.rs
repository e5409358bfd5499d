//! One file per subcommand.

pub mod events;
pub mod exec;
pub mod schema;
