//! Placement constraints as written in an app definition; deep parsing lives in the SDK.

use serde_json::{Value, json};

/// Marathon constraint operators accepted in the array form.
const OPERATORS: &[&str] = &[
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

/// One entry of `constraints`, kept in the form the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintSpec {
    /// Marathon form `[field, OPERATOR]` or `[field, OPERATOR, value]`.
    Marathon(Vec<String>),
    /// Swarm-style expression `field==value` / `field!=value`, `~` prefix for soft.
    Expression(String),
}

impl ConstraintSpec {
    /// The JSON form: an array of strings or a string.
    pub fn to_json(&self) -> Value {
        match self {
            ConstraintSpec::Marathon(parts) => json!(parts),
            ConstraintSpec::Expression(expression) => json!(expression),
        }
    }

    /// Checks the shape and the operator name; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ConstraintSpec::Marathon(parts) => check_marathon(parts),
            ConstraintSpec::Expression(expression) => check_expression(expression),
        }
    }
}

fn check_marathon(parts: &[String]) -> Result<(), String> {
    let [field, operator, rest @ ..] = parts else {
        return Err("must have 2 or 3 elements: [field, operator, value?]".to_owned());
    };
    if rest.len() > 1 {
        return Err("must have 2 or 3 elements: [field, operator, value?]".to_owned());
    }
    if field.trim().is_empty() {
        return Err("constraint field must not be empty".to_owned());
    }
    if !OPERATORS.contains(&operator.as_str()) {
        return Err(format!(
            "unknown constraint operator {operator:?}, expected one of {}",
            OPERATORS.join(", ")
        ));
    }
    let value = rest.first();
    match (operator.as_str(), value) {
        ("UNIQUE", Some(_)) => Err("UNIQUE takes no value".to_owned()),
        ("LIKE" | "UNLIKE" | "IS", None) => Err(format!("{operator} needs a value")),
        ("LIKE" | "UNLIKE" | "IS", Some(value)) if value.is_empty() => {
            Err(format!("{operator} needs a non-empty value"))
        }
        ("MAX_PER", None) => Err("MAX_PER needs a value".to_owned()),
        ("MAX_PER", Some(value)) => match value.parse::<u32>() {
            Ok(limit) if limit > 0 => Ok(()),
            _ => Err(format!(
                "MAX_PER value must be a positive integer, got {value:?}"
            )),
        },
        _ => Ok(()),
    }
}

fn check_expression(expression: &str) -> Result<(), String> {
    let hard = expression.strip_prefix('~').unwrap_or(expression);
    let split = hard.split_once("==").or_else(|| hard.split_once("!="));
    let Some((field, value)) = split else {
        return Err(format!(
            "expression {expression:?} has no operator, expected field==value or field!=value"
        ));
    };
    if field.trim().is_empty() {
        return Err(format!("expression {expression:?} has an empty field"));
    }
    if value.trim().is_empty() {
        return Err(format!("expression {expression:?} has an empty value"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marathon(parts: &[&str]) -> ConstraintSpec {
        ConstraintSpec::Marathon(parts.iter().map(|part| (*part).to_owned()).collect())
    }

    #[test]
    fn accepts_marathon_operators() {
        for parts in [
            &["hostname", "UNIQUE"][..],
            &["rack", "GROUP_BY", "3"],
            &["rack", "GROUP_BY"],
            &["rack", "CLUSTER", "a"],
            &["disk", "LIKE", "ssd.*"],
            &["disk", "UNLIKE", "hdd"],
            &["zone", "MAX_PER", "2"],
            &["zone", "IS", "a"],
        ] {
            assert_eq!(marathon(parts).check(), Ok(()), "{parts:?}");
        }
    }

    #[test]
    fn rejects_bad_marathon_shapes() {
        assert!(
            marathon(&["hostname"])
                .check()
                .unwrap_err()
                .contains("2 or 3")
        );
        assert!(marathon(&["a", "UNIQUE", "b", "c"]).check().is_err());
        assert!(
            marathon(&["a", "unique"])
                .check()
                .unwrap_err()
                .contains("unknown constraint")
        );
        assert!(marathon(&["a", "UNIQUE", "x"]).check().is_err());
        assert!(marathon(&["a", "LIKE"]).check().is_err());
        assert!(marathon(&["a", "MAX_PER", "0"]).check().is_err());
        assert!(marathon(&["", "UNIQUE"]).check().is_err());
    }

    #[test]
    fn expressions() {
        for ok in ["disk==ssd", "~zone==a", "node!=a", "name==/web-\\d+/"] {
            assert_eq!(
                ConstraintSpec::Expression(ok.into()).check(),
                Ok(()),
                "{ok}"
            );
        }
        for bad in ["disk>=ssd", "==ssd", "disk==", "~", ""] {
            assert!(
                ConstraintSpec::Expression(bad.into()).check().is_err(),
                "{bad}"
            );
        }
    }
}
