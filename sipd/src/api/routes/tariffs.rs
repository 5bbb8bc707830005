//! Tariffs (R list/get, O create/update/delete).

use serde::{Deserialize, Serialize};

use super::accounts::check_name;
use super::crud::Resource;
use crate::api::error::{ApiError, ApiResult};
use crate::store::{Id, Micros, Store, StoreError, Tariff, Tx, TxResult};

#[derive(Debug, Clone, Serialize)]
pub struct TariffView {
    pub id: Id,
    pub name: String,
    pub rate_per_minute: String,
    pub expected_call_secs: u32,
    pub initial_increment_secs: u32,
    pub increment_secs: u32,
}

pub fn view(t: &Tariff) -> TariffView {
    TariffView {
        id: t.id,
        name: t.name.clone(),
        rate_per_minute: t.rate_per_minute.to_string(),
        expected_call_secs: t.expected_call_secs,
        initial_increment_secs: t.initial_increment_secs,
        increment_secs: t.increment_secs,
    }
}

fn default_expected() -> u32 {
    120
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffIn {
    pub name: String,
    pub rate_per_minute: String,
    #[serde(default = "default_expected")]
    pub expected_call_secs: u32,
    #[serde(default = "one")]
    pub initial_increment_secs: u32,
    #[serde(default = "one")]
    pub increment_secs: u32,
}

fn build(i: TariffIn, id: Id) -> ApiResult<Tariff> {
    check_name("name", &i.name)?;
    let rate: Micros = i
        .rate_per_minute
        .parse()
        .map_err(|e: crate::store::BadAmount| {
            ApiError::invalid("rate_per_minute", e.to_string())
        })?;
    if rate.0 < 0 {
        return Err(ApiError::invalid("rate_per_minute", "must not be negative"));
    }
    for (f, v) in [
        ("expected_call_secs", i.expected_call_secs),
        ("initial_increment_secs", i.initial_increment_secs),
        ("increment_secs", i.increment_secs),
    ] {
        if v == 0 {
            return Err(ApiError::invalid(f, "must be at least 1 second"));
        }
    }
    let t = Tariff {
        id,
        name: i.name,
        rate_per_minute: rate,
        expected_call_secs: i.expected_call_secs,
        initial_increment_secs: i.initial_increment_secs,
        increment_secs: i.increment_secs,
    };
    t.validate()?;
    Ok(t)
}

impl Resource for Tariff {
    const KIND: &'static str = "tariff";
    type In = TariffIn;
    type View = TariffView;

    fn view(&self) -> TariffView {
        view(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn build(input: TariffIn, id: Id) -> ApiResult<Tariff> {
        build(input, id)
    }
    fn with_id(self, id: Id) -> Tariff {
        Tariff { id, ..self }
    }
    fn list(store: &Store) -> Vec<Result<Tariff, StoreError>> {
        store.tariffs()
    }
    fn load(store: &Store, id: Id) -> Result<Option<Tariff>, StoreError> {
        store.tariff(id)
    }
    fn get(tx: &Tx<'_>, id: Id) -> TxResult<Option<Tariff>> {
        tx.tariff(id)
    }
    fn put(tx: &Tx<'_>, t: &Tariff) -> TxResult<Id> {
        tx.put_tariff(t)
    }
    fn remove(tx: &Tx<'_>, id: Id) -> TxResult<Tariff> {
        tx.delete_tariff(id)
    }
    /// A tariff an account bills with cannot go.
    fn check_delete(store: &Store, t: &Tariff) -> ApiResult<()> {
        let users: Vec<String> = store
            .accounts()
            .into_iter()
            .flatten()
            .filter(|a| a.tariff_id == Some(t.id))
            .map(|a| a.name)
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(ApiError::conflict(format!(
            "tariff {:?} is used by account(s) {}",
            t.name,
            users.join(", ")
        )))
    }
}
