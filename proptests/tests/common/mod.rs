//! Strategies shared by more than one property-test file.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Number, Value};

/// Any JSON value serde_json can hold: integers of both signs, finite floats, any Unicode;
/// nested up to `depth` levels, about `size` values in all, up to `branch` per array or object
/// (under 1 each is taken as 1).
pub(crate) fn json(depth: u32, size: u32, branch: u32) -> BoxedStrategy<Value> {
    let branch = branch.max(1);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    let items = 0..branch as usize;
    leaf.prop_recursive(depth, size, branch, move |inner| {
        prop_oneof![
            vec(inner.clone(), items.clone()).prop_map(Value::Array),
            btree_map(any::<String>(), inner, items.clone())
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}
