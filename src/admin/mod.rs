//! The admin API under `/admin/v1/`, one file per concept: the imgpkg import (`import`),
//! online GC (`gc`), repository removal (`repositories`), import records (`imports`), the
//! timers (`tasks`) and the admin token (`token`).

pub mod gc;
pub mod import;
pub mod token;

pub use gc::spawn_background;
pub use import::{router, AdminState, IMPORT_PATH};
pub use token::{AdminToken, TokenSource};
