//! `sbcctl`: scripting CLI over the management API. The logic is in `tui::ctl`.

fn main() {
    std::process::exit(tui::ctl::main());
}
