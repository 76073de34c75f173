//! Live reload: applies a new configuration to the running loops (SIGHUP in the binary; an
//! embedder calls [`Reloader::reload`]). What may change live, and how loops pick it up, is
//! [`crate::live`]'s.

use std::sync::{Arc, PoisonError};

use crate::live::{config_hash, merge, Live};
use crate::{Config, ConfigError};

/// Applies a new configuration to a running server (SIGHUP in the binary; an embedder calls
/// it directly). `Send + Clone`; from [`crate::Handle::reloader`].
#[derive(Clone)]
pub struct Reloader {
    pub(crate) shared: Arc<super::Shared>,
}

impl Reloader {
    /// Validates `config` and applies its [`crate::live::RELOADABLE`] options live; the other options keep
    /// their running values and each that differs is logged "changed, needs restart". Returns
    /// their keys. On an error nothing changes, and the failure is counted and logged
    /// (invariant 1).
    pub fn reload(&self, config: Config) -> Result<Vec<String>, ConfigError> {
        let shared = &self.shared;
        let _one_at_a_time = shared.live.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let built = config.validate().and_then(|()| {
            let (merged, restart) = merge(&shared.live.get().config, &config);
            Ok((Live::new(merged)?, restart))
        });
        let (live, restart) = match built {
            Ok(built) => built,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        for key in &restart {
            log::warn!("config reload: {key} changed, needs restart; keeping the running value");
        }
        shared.admission.set_limits(live.admission_limits());
        shared.hub.set_lag_budget(std::time::Duration::from_millis(live.config.max_delivery_lag_ms));
        let hash = config_hash(&live.config);
        shared.live.set(live);
        // Idle loops take the new settings now rather than at their next tick.
        shared.hub.wake_all();
        log::info!("config reloaded: hash {hash}, {} changed options need a restart", restart.len());
        Ok(restart)
    }

    /// Counts and logs a reload whose configuration could not even be built (a config file
    /// that does not parse); nothing changes.
    pub fn failed(&self, why: &dyn std::fmt::Display) {
        self.shared.live.failed(why);
    }

    /// The effective configuration (invariant 3).
    pub fn config(&self) -> Config {
        self.shared.live.get().config.clone()
    }
}
