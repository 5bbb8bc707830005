//! Staff (admins only): role, TOTP state, where from they may log in. Admins create users
//! (`n`: the console makes up a first password when none is typed and shows it once; the
//! user must change it, and an admin must enrol TOTP, at first login), change a role (`R`),
//! disable or enable (`D`), end every session (`V`) and remove a TOTP factor (`T`); every
//! change but the creation asks first, and the creation shows what it will do before.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::Row;

use super::bans::check_prefix;
use super::form::{Form, FormKey};
use super::{ListNav, ListView, Screen, draw_list};
use crate::console::action::{Action, Request};
use crate::console::data::Data;
use crate::console::keymap::{Command, Scope};
use crate::console::model::StaffMember;
use crate::console::ui;

/// The roles the API knows.
pub const ROLES: [&str; 3] = ["admin", "operator", "read-only"];

/// What the open form is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaffForm {
    /// A new user: username, role, password, allowed hosts.
    Create(Form),
    /// A new role for the user (`id`, `username`, current role).
    Role(u64, String, String, Form),
}

/// The staff screen.
#[derive(Debug, Default)]
pub struct Staff {
    /// Selection and filter.
    pub nav: ListNav,
    /// The open form.
    pub form: Option<StaffForm>,
}

fn role_of(s: &str) -> Result<String, String> {
    let r = s.trim().to_ascii_lowercase();
    ROLES
        .contains(&r.as_str())
        .then_some(r)
        .ok_or_else(|| format!("{s:?}: admin, operator or read-only"))
}

/// The request a filled-in creation form makes, asked first; or which field is wrong.
fn create(form: &Form) -> Result<Action, (usize, String)> {
    let username = form.value(0).to_owned();
    if username.is_empty() {
        return Err((0, "a username".into()));
    }
    let role = role_of(form.value(1)).map_err(|e| (1, e))?;
    let password = Some(form.value(2).to_owned()).filter(|p| !p.is_empty());
    let allowed_hosts = form
        .value(3)
        .split([' ', ','])
        .filter(|h| !h.is_empty())
        .map(check_prefix)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (3, e))?;
    let from = if allowed_hosts.is_empty() {
        "anywhere".to_owned()
    } else {
        allowed_hosts.join(" ")
    };
    let pw = if password.is_some() {
        "the one typed"
    } else {
        "made up now, shown once"
    };
    let totp = if role == "admin" {
        " and enrol TOTP"
    } else {
        ""
    };
    Ok(Action::Confirm {
        prompt: format!(
            "Create {role} {username:?} (from {from})?\nFirst password: {pw}.\nThey must change it at first login{totp}."
        ),
        request: Request::StaffCreate {
            username,
            role,
            password,
            allowed_hosts,
        },
    })
}

impl Staff {
    fn rows<'a>(&self, data: &'a Data) -> Vec<&'a StaffMember> {
        data.staff
            .value
            .iter()
            .filter(|s| {
                self.nav
                    .filter
                    .matches(&format!("{} {} {}", s.username, s.role, s.totp))
            })
            .collect()
    }

    fn selected<'a>(&self, data: &'a Data) -> Option<&'a StaffMember> {
        self.rows(data).get(self.nav.selected).copied()
    }
}

impl Screen for Staff {
    fn scopes(&self) -> Vec<Scope> {
        vec![Scope::Staff, Scope::List]
    }

    fn editing(&self) -> bool {
        self.form.is_some() || self.nav.editing.is_some()
    }

    fn input(&mut self, key: KeyEvent, _data: &Data) -> Option<Action> {
        let Some(mut open) = self.form.take() else {
            self.nav.input(key);
            return None;
        };
        let form = match &mut open {
            StaffForm::Create(f) | StaffForm::Role(_, _, _, f) => f,
        };
        match form.input(key) {
            FormKey::Editing => {}
            FormKey::Cancel => return None,
            FormKey::Submit => {
                let r = match &open {
                    StaffForm::Create(f) => create(f),
                    StaffForm::Role(id, username, was, f) => role_of(f.value(0))
                        .map_err(|e| (0, e))
                        .map(|role| Action::Confirm {
                            prompt: format!(
                                "Change the role of {username:?} from {was} to {role}?\nTheir sessions end."
                            ),
                            request: Request::StaffUpdate {
                                id: *id,
                                username: username.clone(),
                                role: Some(role),
                                enabled: None,
                            },
                        }),
                };
                match r {
                    Ok(a) => return Some(a),
                    Err((i, why)) => match &mut open {
                        StaffForm::Create(f) | StaffForm::Role(_, _, _, f) => f.refuse(i, why),
                    },
                }
            }
        }
        self.form = Some(open);
        None
    }

    fn command(&mut self, cmd: Command, data: &Data) -> Option<Action> {
        if self.nav.navigate(cmd, self.rows(data).len()) {
            return None;
        }
        if cmd == Command::StaffAdd {
            let form = Form::new(
                "New staff user",
                &[
                    ("username", ""),
                    ("role", "operator"),
                    ("password", ""),
                    ("from", ""),
                ],
            )
            .mask(2)
            .hint(&[
                "role: admin, operator or read-only",
                "password: empty makes one up, shown once",
                "from: addresses or prefixes; empty: anywhere",
            ]);
            self.form = Some(StaffForm::Create(form));
            return None;
        }
        let s = self.selected(data)?;
        let (id, name) = (s.id, s.username.clone());
        let ask = |prompt: String, request: Request| Some(Action::Confirm { prompt, request });
        match cmd {
            Command::StaffRole => {
                let form =
                    Form::new("Role", &[("role", &s.role)]).hint(&["admin, operator or read-only"]);
                self.form = Some(StaffForm::Role(id, name, s.role.clone(), form));
                None
            }
            Command::StaffEnable if s.enabled => ask(
                format!("Disable {name:?}? They cannot log in, and their sessions end."),
                Request::StaffUpdate {
                    id,
                    username: name,
                    role: None,
                    enabled: Some(false),
                },
            ),
            Command::StaffEnable => ask(
                format!("Enable {name:?} again?"),
                Request::StaffUpdate {
                    id,
                    username: name,
                    role: None,
                    enabled: Some(true),
                },
            ),
            Command::StaffRevoke => ask(
                format!("End every session of {name:?}?"),
                Request::StaffRevoke { id, username: name },
            ),
            Command::StaffTotpReset => ask(
                format!(
                    "Remove the TOTP factor of {name:?}?\nTheir sessions end; they enrol again at next login."
                ),
                Request::StaffTotpReset { id, username: name },
            ),
            _ => None,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, data: &Data, _now_ms: u64) {
        let rows: Vec<Row> = self
            .rows(data)
            .into_iter()
            .map(|s| {
                let weak = s.totp != "enrolled" || s.must_change_password;
                let style = if !s.enabled {
                    ui::dim()
                } else if weak {
                    ui::warn()
                } else {
                    ui::Style::default()
                };
                let hosts = if s.allowed_hosts.is_empty() {
                    "anywhere".to_owned()
                } else {
                    s.allowed_hosts.join(" ")
                };
                Row::new(vec![
                    s.id.to_string(),
                    s.username.clone(),
                    s.role.clone(),
                    if s.enabled { "yes".into() } else { "no".into() },
                    s.totp.clone(),
                    if s.must_change_password {
                        "must change".into()
                    } else {
                        String::new()
                    },
                    hosts,
                ])
                .style(style)
            })
            .collect();
        draw_list(
            f,
            area,
            &mut self.nav,
            ListView {
                title: " Staff ".into(),
                header: vec!["#", "User", "Role", "On", "TOTP", "Password", "From"],
                widths: vec![
                    Constraint::Length(4),
                    Constraint::Length(14),
                    Constraint::Length(10),
                    Constraint::Length(3),
                    Constraint::Length(9),
                    Constraint::Length(12),
                    Constraint::Min(0),
                ],
                rows,
                total: data.staff.value.len(),
                loaded: data.staff.loaded,
                error: data.staff.error.as_deref(),
                what: "staff",
                select: true,
            },
        );
        match &self.form {
            Some(StaffForm::Create(form) | StaffForm::Role(_, _, _, form)) => form.draw(f, area),
            None => {}
        }
    }

    fn refresh(&self, _data: &Data) -> Vec<Request> {
        vec![Request::Staff]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyCode, KeyModifiers};

    fn data() -> Data {
        let mut d = Data::default();
        let m = |id, name: &str, role: &str, enabled| StaffMember {
            id,
            username: name.into(),
            role: role.into(),
            enabled,
            totp: "enrolled".into(),
            ..StaffMember::default()
        };
        d.staff.set(vec![
            m(1, "admin", "admin", true),
            m(2, "bob", "operator", false),
        ]);
        d
    }

    fn typed(s: &mut Staff, d: &Data, text: &str) -> Option<Action> {
        let mut last = None;
        for c in text.chars() {
            let code = match c {
                '\t' => KeyCode::Tab,
                '\n' => KeyCode::Enter,
                c => KeyCode::Char(c),
            };
            last = s.input(KeyEvent::new(code, KeyModifiers::NONE), d);
        }
        last
    }

    fn request(a: Option<Action>) -> Request {
        match a {
            Some(Action::Confirm { request, .. }) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_checks_the_form_and_asks_first() {
        let d = data();
        let mut s = Staff::default();
        assert_eq!(s.command(Command::StaffAdd, &d), None);
        assert!(s.editing());
        // Without a username: refused on that field.
        assert_eq!(typed(&mut s, &d, "\t\t\t\n"), None);
        let Some(StaffForm::Create(f)) = &s.form else {
            panic!()
        };
        assert_eq!((f.focus, f.error.is_some()), (0, true));
        if let Some(StaffForm::Create(f)) = s.form.as_mut() {
            f.values = vec![String::new(); 4];
            f.values[1] = "operator".into();
        }
        assert_eq!(
            typed(&mut s, &d, "carol\t\t\t10.0.0.1/8\n"),
            None,
            "host bits"
        );
        if let Some(StaffForm::Create(f)) = s.form.as_mut() {
            f.values[3] = "10.0.0.0/8 192.0.2.7".into();
        }
        let r = request(typed(&mut s, &d, "\n"));
        assert_eq!(
            r,
            Request::StaffCreate {
                username: "carol".into(),
                role: "operator".into(),
                password: None,
                allowed_hosts: vec!["10.0.0.0/8".into(), "192.0.2.7".into()],
            }
        );
        assert!(!s.editing());
    }

    #[test]
    fn role_disable_revoke_and_totp_reset_ask_first() {
        let d = data();
        let mut s = Staff::default();
        s.command(Command::Down, &d);
        s.command(Command::StaffRole, &d);
        if let Some(StaffForm::Role(_, _, _, f)) = s.form.as_mut() {
            assert_eq!(f.value(0), "operator");
            f.values[0] = "boss".into();
        }
        assert_eq!(typed(&mut s, &d, "\n"), None, "no such role");
        if let Some(StaffForm::Role(_, _, _, f)) = s.form.as_mut() {
            f.values[0] = "Read-Only".into();
        }
        let Some(Action::Confirm { prompt, request: r }) = typed(&mut s, &d, "\n") else {
            panic!()
        };
        assert!(prompt.contains("from operator to read-only"), "{prompt}");
        assert_eq!(
            r,
            Request::StaffUpdate {
                id: 2,
                username: "bob".into(),
                role: Some("read-only".into()),
                enabled: None
            }
        );
        let enable = request(s.command(Command::StaffEnable, &d));
        assert!(
            matches!(
                enable,
                Request::StaffUpdate {
                    enabled: Some(true),
                    ..
                }
            ),
            "bob is disabled"
        );
        assert_eq!(
            request(s.command(Command::StaffRevoke, &d)),
            Request::StaffRevoke {
                id: 2,
                username: "bob".into()
            }
        );
        assert_eq!(
            request(s.command(Command::StaffTotpReset, &d)),
            Request::StaffTotpReset {
                id: 2,
                username: "bob".into()
            }
        );
        s.command(Command::Top, &d);
        let disable = request(s.command(Command::StaffEnable, &d));
        assert!(matches!(
            disable,
            Request::StaffUpdate {
                id: 1,
                enabled: Some(false),
                ..
            }
        ));
    }
}
