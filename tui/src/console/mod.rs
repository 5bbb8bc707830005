//! `sbc-tui`, the operator console: one component per screen ([`screens`]), an [`action`]
//! enum between them and the [`app`], a [`source::DataSource`] between the app and the
//! management API (HTTPS on background threads, or a fake in tests), an injected
//! [`clock`], and a [`keymap`] from which the help and the key bar are built.

pub mod action;
pub mod app;
pub mod clock;
pub mod data;
pub mod filter;
pub mod keymap;
pub mod model;
pub mod screens;
pub mod source;
pub mod ui;

pub use app::App;
