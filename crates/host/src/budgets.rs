//! Each install's budget of host requests (`warden_process::RequestBudget`), kept by (tenant,
//! extension) while any load of it lives: a reload (the same bundle installed again, an
//! upgrade, a trust reload) takes over what its calls had left instead of a full bucket
//! (outside attack, session 37: reinstalling every 0.3 s let 3.4 times the rate through).
//! And each tenant's starting slots, which all its process installs' sandboxes are made in
//! (`warden_runtime::tenant_starting_slots`), kept while any load holds them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Semaphore;
use warden_manifest::{ExtensionId, TenantName};
use warden_process::{LimitError, RequestBudget};

/// Entries are dropped once no load holds them, when a map has grown past this.
const PRUNE_PAST: usize = 1024;

/// What loads share by `K`, while any of them holds it.
struct Kept<K, V>(Mutex<HashMap<K, Weak<V>>>);

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept(Mutex::default())
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Kept<K, V> {
    /// The live value of `key` if it `fits`, else a new one from `make`.
    fn of(&self, key: &K, fits: impl FnOnce(&V) -> bool, make: impl FnOnce() -> V) -> Arc<V> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = all.get(key).and_then(Weak::upgrade)
            && fits(&live)
        {
            return live;
        }
        let made = Arc::new(make());
        if all.len() >= PRUNE_PAST {
            all.retain(|_, v| v.strong_count() > 0);
        }
        all.insert(key.clone(), Arc::downgrade(&made));
        made
    }
}

#[derive(Default)]
pub(crate) struct Budgets(Kept<(TenantName, ExtensionId), RequestBudget>);

impl Budgets {
    /// The budget of `tenant`'s `id`: the live one if its rate is `per_second`, else a new
    /// full one (the operator changed the rate).
    pub(crate) fn of(
        &self,
        tenant: &TenantName,
        id: &ExtensionId,
        per_second: u32,
    ) -> Result<Arc<RequestBudget>, LimitError> {
        // Checked first: a rate the policy should not have let through fails the load.
        let fresh = RequestBudget::new(per_second)?;
        Ok(self.0.of(
            &(tenant.clone(), id.clone()),
            |live| live.per_second() == per_second,
            || fresh,
        ))
    }
}

/// Each tenant's starting slots for process sandboxes, while a load of one of its process
/// installs holds them.
#[derive(Default)]
pub(crate) struct TenantStarting(Kept<TenantName, Semaphore>);

impl TenantStarting {
    pub(crate) fn of(&self, tenant: &TenantName) -> Arc<Semaphore> {
        self.0.of(
            tenant,
            |_| true,
            || Semaphore::new(warden_runtime::tenant_starting_slots()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_over_the_budget_a_live_load_holds() {
        let budgets = Budgets::default();
        let t: TenantName = "t".parse().unwrap();
        let (a, b): (ExtensionId, ExtensionId) = ("x.a".parse().unwrap(), "x.b".parse().unwrap());
        let first = budgets.of(&t, &a, 10).unwrap();
        assert!(first.take(10));
        // Reloaded while the first load lives: the same, empty budget.
        let again = budgets.of(&t, &a, 10).unwrap();
        assert!(Arc::ptr_eq(&first, &again) && !again.take(1));
        // Another install, or another rate: its own.
        assert!(budgets.of(&t, &b, 10).unwrap().take(10));
        assert!(budgets.of(&t, &a, 20).unwrap().take(20));
        // No load left: a new one.
        drop((first, again));
        let later = budgets.of(&t, &a, 10).unwrap();
        assert!(later.take(10));
    }

    #[test]
    fn a_tenants_process_installs_share_its_starting_slots() {
        let starting = TenantStarting::default();
        let (t, u): (TenantName, TenantName) = ("t".parse().unwrap(), "u".parse().unwrap());
        let first = starting.of(&t);
        assert_eq!(
            first.available_permits(),
            warden_runtime::tenant_starting_slots()
        );
        assert!(Arc::ptr_eq(&first, &starting.of(&t)));
        assert!(!Arc::ptr_eq(&first, &starting.of(&u)));
        // Taken while held: another install of the tenant sees them taken.
        let _held = first.try_acquire().unwrap();
        assert_eq!(
            starting.of(&t).available_permits(),
            warden_runtime::tenant_starting_slots() - 1
        );
    }
}
