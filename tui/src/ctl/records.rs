//! Records the API serves the same way whatever they are (accounts, tariffs, connections,
//! rules, staff users): found by id or name, listed, shown, created, updated and deleted;
//! and the request bodies built for them from flags over `--data`.

use serde_json::{Map, Value};

use super::Ctx;
use super::output::created;
use crate::api::{Client, Error, Method};
use crate::cli::Enabled;
use crate::table;

/// A kind of record: where the API serves it and how it is named and shown.
pub(super) struct Coll {
    /// Lists at this path, and each record at `path/{id}`.
    pub path: &'static str,
    /// What it is called in messages and "no … named" errors.
    pub kind: &'static str,
    /// The field a record is named by on the command line.
    pub name_key: &'static str,
    pub cols: &'static [table::Col],
}

/// One operation on a record; the caller has resolved names to ids and built the body.
pub(super) enum Crud {
    List,
    Get(u64),
    Create(Value),
    Update(u64, Value),
    Delete(u64),
}

impl Ctx<'_, '_> {
    /// The id of `target` (an id, or a record's name) in `coll`.
    pub(super) fn id_in(&self, client: &Client, coll: &Coll, target: &str) -> Result<u64, Error> {
        if let Ok(id) = target.parse() {
            return Ok(id);
        }
        let list = client.get(coll.path)?;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|x| x.get(coll.name_key).and_then(Value::as_str) == Some(target))
            .and_then(|x| x.get("id").and_then(Value::as_u64))
            .ok_or_else(|| Error::NotFound(format!("no {} named {target:?}", coll.kind)))
    }

    pub(super) fn crud(&mut self, client: &Client, coll: &Coll, op: Crud) -> Result<(), Error> {
        self.crud_at(client, coll, coll.path, op)
    }

    /// As [`Ctx::crud`] for records listed and created under another path than their own
    /// (an account's rules).
    pub(super) fn crud_at(
        &mut self,
        client: &Client,
        coll: &Coll,
        list_path: &str,
        op: Crud,
    ) -> Result<(), Error> {
        let one = |id: u64| format!("{}/{id}", coll.path);
        match op {
            Crud::List => {
                let v = client.get(list_path)?;
                self.list(&v, coll.cols)
            }
            Crud::Get(id) => {
                let v = client.get(&one(id))?;
                self.show(&v)
            }
            Crud::Create(body) => {
                let v = client.json(Method::Post, list_path, &[], Some(&body))?;
                self.done(&v, &created(coll.kind, &v))
            }
            Crud::Update(id, body) => {
                let v = client.json(Method::Put, &one(id), &[], Some(&body))?;
                self.done(&v, &format!("updated {} {id}", coll.kind))
            }
            Crud::Delete(id) => {
                let v = client.json(Method::Delete, &one(id), &[], None)?;
                self.done(&v, &format!("deleted {} {id}", coll.kind))
            }
        }
    }
}

pub(super) fn set<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

pub(super) fn set_enabled(m: &mut Map<String, Value>, e: &Enabled) {
    if e.enable {
        m.insert("enabled".into(), true.into());
    } else if e.disable {
        m.insert("enabled".into(), false.into());
    }
}

/// The body of a create (which needs a name) or an update (which needs something to change).
pub(super) fn finish_body(m: Map<String, Value>, create: bool, what: &str) -> Result<Value, Error> {
    if create && !m.contains_key("name") {
        return Err(Error::Usage(format!("a new {what} needs --name")));
    }
    if !create && m.is_empty() {
        return Err(Error::Usage(
            "nothing to change: give a field to set".into(),
        ));
    }
    Ok(Value::Object(m))
}
