//! Overlays: several `-f` files merged in order. Later files win; mappings
//! merge key by key; lists and scalars are replaced whole, as Compose does.

use super::yaml::{Node, Value};

/// Merges `overlay` onto what `merged` holds so far (or starts it).
pub fn merge_onto(merged: &mut Option<Node>, overlay: Node) {
    *merged = Some(match merged.take() {
        None => overlay,
        Some(base) => merge(base, overlay),
    });
}

/// Merges `overlay` onto `base`. Every node keeps the span of the file it came
/// from, so problems point into the right file.
pub fn merge(base: Node, overlay: Node) -> Node {
    match (base.value, overlay.value) {
        (Value::Map(mut entries), Value::Map(over)) => {
            for (key, value) in over {
                match entries.iter().position(|(k, _)| k.name == key.name) {
                    Some(pos) => {
                        let old = std::mem::replace(
                            &mut entries[pos].1,
                            Node {
                                value: Value::Null,
                                span: value.span,
                            },
                        );
                        entries[pos] = (key, merge(old, value));
                    }
                    None => entries.push((key, value)),
                }
            }
            Node {
                value: Value::Map(entries),
                span: base.span,
            }
        }
        // An overlay that names a key but gives it nothing leaves the base alone.
        (value, Value::Null) => Node {
            value,
            span: base.span,
        },
        (_, value) => Node {
            value,
            span: overlay.span,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;

    fn merged(a: &str, b: &str) -> Node {
        merge(parse(0, a).unwrap(), parse(1, b).unwrap())
    }

    fn text(node: &Node) -> String {
        match &node.value {
            Value::Scalar { text, .. } => text.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn maps_merge_lists_replace_later_wins() {
        let m = merged(
            "services:\n  api:\n    image: a:1\n    ports: ['1:1', '2:2']\n  db:\n    image: d\n",
            "services:\n  api:\n    image: a:2\n    ports: ['3:3']\n  web:\n    image: w\n",
        );
        let services = m.get("services").unwrap();
        let api = services.get("api").unwrap();
        assert_eq!(text(api.get("image").unwrap()), "a:2");
        assert_eq!(api.get("image").unwrap().span.file, 1);
        match &api.get("ports").unwrap().value {
            Value::Seq(items) => assert_eq!(items.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(services.get("db").is_some());
        assert!(services.get("web").is_some());
    }

    #[test]
    fn empty_overlay_key_keeps_base() {
        let m = merged("services:\n  api:\n    image: a\n", "services:\n  api:\n");
        assert_eq!(
            text(
                m.get("services")
                    .unwrap()
                    .get("api")
                    .unwrap()
                    .get("image")
                    .unwrap()
            ),
            "a"
        );
    }
}
