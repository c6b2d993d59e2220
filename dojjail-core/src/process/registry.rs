//! Entrypoints: functions marked `#[dojjail::host]`, registered with `inventory` under a
//! stable name so that a re-executed copy of the binary can find them.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A function that can be a host's main process. Implemented by `#[dojjail::host]`; not
/// meant to be implemented by hand.
///
/// The macro turns `fn add(a: i32, b: i32) -> i32` into a value `add` whose `Args` is
/// `(i32, i32)` and whose `Output` is `i32`.
pub trait Entrypoint: Copy + Send + Sync + 'static {
    /// The arguments, as a tuple.
    type Args: Serialize + DeserializeOwned;
    /// The return value, given back by [`Host::wait`](crate::Host::wait).
    type Output: Serialize + DeserializeOwned;
    /// The registered name: the function's module path and name.
    const NAME: &'static str;
}

/// One registered entrypoint. Not public API: built by `#[dojjail::host]`.
#[doc(hidden)]
pub struct EntrypointRegistration {
    /// The function's module path and name.
    pub name: &'static str,
    /// Decodes the arguments, calls the function, encodes its value.
    pub run: fn(serde_json::Value) -> Result<serde_json::Value, String>,
}

inventory::collect!(EntrypointRegistration);

/// The entrypoint registered under `name`.
pub(crate) fn find(name: &str) -> Option<&'static EntrypointRegistration> {
    inventory::iter::<EntrypointRegistration>
        .into_iter()
        .find(|registration| registration.name == name)
}

/// Every registered name, for error messages.
pub(crate) fn known_names() -> String {
    let mut names: Vec<&str> = inventory::iter::<EntrypointRegistration>
        .into_iter()
        .map(|registration| registration.name)
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
