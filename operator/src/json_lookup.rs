//! Lookups in the JSON the unit tests read back (manifests, patches, rendered xDS); a missing
//! piece panics, which is the test's failure report.

use serde_json::Value;

/// The element of the array `list` whose `name` is `name`.
pub(crate) fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("nothing named {name:?} in {list}"))
}

/// The `name` of every element of the array `list`.
pub(crate) fn names(list: &Value) -> Vec<&str> {
    strings_of(list, |e| &e["name"])
}

/// The array `list` of strings.
pub(crate) fn strings(list: &Value) -> Vec<&str> {
    strings_of(list, |e| e)
}

fn strings_of<'a>(list: &'a Value, field: impl Fn(&'a Value) -> &'a Value) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|e| {
            let v = field(e);
            v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
        })
        .collect()
}
