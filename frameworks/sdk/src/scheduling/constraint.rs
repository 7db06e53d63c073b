//! Placement constraints in Marathon form (`["hostname","UNIQUE"]`) and Swarm form (`disk==ssd`).

use std::collections::HashMap;
use std::fmt;

use agora_proto::AgentId;

use super::pattern::ValuePattern;

/// Why a constraint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The constraint has no fields or an empty expression.
    #[error("constraint: empty")]
    Empty,
    /// A required field is missing or blank.
    #[error("constraint {field}: missing")]
    MissingField {
        /// `attribute`, `operator` or `value`.
        field: &'static str,
    },
    /// The Marathon operator is not one Agora knows.
    #[error(
        "constraint operator: unknown {operator:?}; expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS"
    )]
    UnknownOperator {
        /// The operator as written.
        operator: String,
    },
    /// The value does not suit the operator (missing, superfluous or not a number).
    #[error("constraint value: {operator} {reason}")]
    InvalidValue {
        /// The operator the value belongs to.
        operator: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A regex value does not compile.
    #[error("constraint value: regex {pattern:?} is invalid: {reason}")]
    InvalidRegex {
        /// The regex as written.
        pattern: String,
        /// The compiler's complaint.
        reason: String,
    },
    /// A Swarm expression has neither `==` nor `!=`.
    #[error(
        "constraint expression {expression:?}: expected <attribute>==<value> or <attribute>!=<value>"
    )]
    MalformedExpression {
        /// The expression as written.
        expression: String,
    },
}

/// How a constraint judges an agent. Attribute values come from [`AgentAttributes::value`].
#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    /// No two instances share a value of the attribute.
    Unique,
    /// All instances on agents whose attribute equals the value; without a value, all on the
    /// value of the first instance.
    Cluster(Option<String>),
    /// Instances spread evenly over the attribute's values; the optional number is how many
    /// distinct values to expect (default: every value among the candidate agents).
    GroupBy(Option<u32>),
    /// The attribute fully matches the regex.
    Like(ValuePattern),
    /// The attribute does not fully match the regex (an agent lacking it matches).
    Unlike(ValuePattern),
    /// At most this many instances per value of the attribute.
    MaxPer(u32),
    /// The attribute equals the value.
    Is(String),
    /// Swarm `==`: the attribute matches the exact, glob or regex value.
    Equals(ValuePattern),
    /// Swarm `!=`: the attribute does not match the value (an agent lacking it matches).
    NotEquals(ValuePattern),
}

impl Operator {
    /// True when the verdict depends on where instances already run (not only on the agent).
    pub fn depends_on_instances(&self) -> bool {
        matches!(
            self,
            Operator::Unique | Operator::Cluster(None) | Operator::GroupBy(_) | Operator::MaxPer(_)
        )
    }

    /// True when an agent lacking the attribute can still satisfy the operator.
    pub fn accepts_missing_attribute(&self) -> bool {
        matches!(self, Operator::Unlike(_) | Operator::NotEquals(_))
    }
}

/// One placement rule: an attribute, an operator and whether it is only a preference.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    attribute: String,
    operator: Operator,
    soft: bool,
}

/// What constraints can see of an agent: its id, hostname and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentAttributes {
    /// The agent's id (attribute `agent_id`).
    pub agent_id: AgentId,
    /// The agent's hostname (attribute `hostname`, alias `node`).
    pub hostname: String,
    /// Agent labels; any other attribute name is looked up here.
    pub labels: HashMap<String, String>,
}

impl AgentAttributes {
    /// The value of `attribute` on this agent, `None` when the agent lacks the label.
    pub fn value(&self, attribute: &str) -> Option<&str> {
        match attribute {
            "hostname" | "node" => Some(self.hostname.as_str()),
            "agent_id" => Some(self.agent_id.as_str()),
            label => self.labels.get(label).map(String::as_str),
        }
    }
}

fn parse_count(operator: &'static str, text: &str) -> Result<u32, ConstraintError> {
    text.trim()
        .parse::<u32>()
        .map_err(|error| ConstraintError::InvalidValue {
            operator,
            reason: format!("needs a non-negative integer, got {text:?}: {error}"),
        })
}

impl Constraint {
    /// A hard constraint from parts.
    pub fn new(attribute: impl Into<String>, operator: Operator) -> Self {
        Self {
            attribute: attribute.into(),
            operator,
            soft: false,
        }
    }

    /// The same constraint as a preference: it orders agents but never refuses one.
    pub fn soft(mut self) -> Self {
        self.soft = true;
        self
    }

    /// Reads Marathon's `[field, OPERATOR, value?]` form.
    pub fn from_marathon(fields: &[String]) -> Result<Self, ConstraintError> {
        let (attribute, rest) = fields.split_first().ok_or(ConstraintError::Empty)?;
        let attribute = attribute.trim();
        if attribute.is_empty() {
            return Err(ConstraintError::MissingField { field: "attribute" });
        }
        let (operator_text, values) = rest
            .split_first()
            .ok_or(ConstraintError::MissingField { field: "operator" })?;
        if values.len() > 1 {
            return Err(ConstraintError::InvalidValue {
                operator: "constraint",
                reason: format!("takes at most 3 fields, got {}", fields.len()),
            });
        }
        let value = values.first().map(String::as_str);
        let operator_upper = operator_text.trim().to_ascii_uppercase();
        let needs_value = |operator: &'static str| {
            value.ok_or(ConstraintError::InvalidValue {
                operator,
                reason: "needs a value".to_owned(),
            })
        };
        let no_value = |operator: &'static str| match value {
            None => Ok(()),
            Some(extra) => Err(ConstraintError::InvalidValue {
                operator,
                reason: format!("takes no value, got {extra:?}"),
            }),
        };
        let operator = match operator_upper.as_str() {
            "UNIQUE" => {
                no_value("UNIQUE")?;
                Operator::Unique
            }
            "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty()).map(str::to_owned)),
            "GROUP_BY" => Operator::GroupBy(match value {
                Some(text) => Some(parse_count("GROUP_BY", text)?),
                None => None,
            }),
            "LIKE" => Operator::Like(ValuePattern::regex(needs_value("LIKE")?)?),
            "UNLIKE" => Operator::Unlike(ValuePattern::regex(needs_value("UNLIKE")?)?),
            "MAX_PER" => Operator::MaxPer(parse_count("MAX_PER", needs_value("MAX_PER")?)?),
            "IS" => Operator::Is(needs_value("IS")?.to_owned()),
            _ => {
                return Err(ConstraintError::UnknownOperator {
                    operator: operator_text.clone(),
                });
            }
        };
        Ok(Self::new(attribute, operator))
    }

    /// Reads a Swarm-style expression: `disk==ssd`, `node!=a`, `zone==us-*`,
    /// `zone==/us-(east|west)/`; a leading `~` makes it soft.
    pub fn from_expression(expression: &str) -> Result<Self, ConstraintError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(ConstraintError::Empty);
        }
        let (soft, body) = match trimmed.strip_prefix('~') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let equals_at = body.find("==");
        let not_equals_at = body.find("!=");
        let (position, negated) = match (equals_at, not_equals_at) {
            (Some(eq), Some(ne)) if ne < eq => (ne, true),
            (Some(eq), _) => (eq, false),
            (None, Some(ne)) => (ne, true),
            (None, None) => {
                return Err(ConstraintError::MalformedExpression {
                    expression: expression.to_owned(),
                });
            }
        };
        let attribute = body[..position].trim();
        let value = body[position + 2..].trim();
        if attribute.is_empty() {
            return Err(ConstraintError::MissingField { field: "attribute" });
        }
        if value.is_empty() {
            return Err(ConstraintError::MissingField { field: "value" });
        }
        let pattern = ValuePattern::parse_expression_value(value)?;
        let operator = if negated {
            Operator::NotEquals(pattern)
        } else {
            Operator::Equals(pattern)
        };
        Ok(Self {
            attribute: attribute.to_owned(),
            operator,
            soft,
        })
    }

    /// The attribute name as written (`hostname`, `node`, `agent_id` or a label).
    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    /// The operator.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// True for a preference that never refuses an agent.
    pub fn is_soft(&self) -> bool {
        self.soft
    }

    /// True when an agent alone decides the verdict, whatever runs where.
    pub fn is_static(&self) -> bool {
        !self.operator.depends_on_instances()
    }

    /// Verdict of an operator that does not depend on instances; `None` for those that do.
    pub fn matches_agent(&self, agent: &AgentAttributes) -> Option<bool> {
        let value = agent.value(&self.attribute);
        let verdict = match &self.operator {
            Operator::Like(pattern) | Operator::Equals(pattern) => {
                value.is_some_and(|value| pattern.matches(value))
            }
            Operator::Unlike(pattern) | Operator::NotEquals(pattern) => {
                !value.is_some_and(|value| pattern.matches(value))
            }
            Operator::Is(expected) | Operator::Cluster(Some(expected)) => value == Some(expected),
            Operator::Unique
            | Operator::Cluster(None)
            | Operator::GroupBy(_)
            | Operator::MaxPer(_) => {
                return None;
            }
        };
        Some(verdict)
    }
}

impl fmt::Display for Constraint {
    /// `hostname:UNIQUE`, `rack:CLUSTER:rack-1`, `disk==ssd`, `~zone==/us-.*/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.soft {
            f.write_str("~")?;
        }
        let attribute = &self.attribute;
        match &self.operator {
            Operator::Equals(pattern) => write!(f, "{attribute}=={pattern}"),
            Operator::NotEquals(pattern) => write!(f, "{attribute}!={pattern}"),
            Operator::Unique => write!(f, "{attribute}:UNIQUE"),
            Operator::Cluster(None) => write!(f, "{attribute}:CLUSTER"),
            Operator::Cluster(Some(value)) => write!(f, "{attribute}:CLUSTER:{value}"),
            Operator::GroupBy(None) => write!(f, "{attribute}:GROUP_BY"),
            Operator::GroupBy(Some(count)) => write!(f, "{attribute}:GROUP_BY:{count}"),
            Operator::Like(pattern) => write!(f, "{attribute}:LIKE:{}", pattern.source()),
            Operator::Unlike(pattern) => write!(f, "{attribute}:UNLIKE:{}", pattern.source()),
            Operator::MaxPer(count) => write!(f, "{attribute}:MAX_PER:{count}"),
            Operator::Is(value) => write!(f, "{attribute}:IS:{value}"),
        }
    }
}

impl std::str::FromStr for Constraint {
    type Err = ConstraintError;

    /// Reads a Swarm expression (`disk==ssd`) or a colon form (`hostname:UNIQUE`,
    /// `rack:GROUP_BY:3`, as [`Constraint`]'s `Display` writes it).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.contains("==") || text.contains("!=") {
            return Self::from_expression(text);
        }
        let trimmed = text.trim();
        let (soft, body) = match trimmed.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let fields: Vec<String> = body.splitn(3, ':').map(str::to_owned).collect();
        let constraint = Self::from_marathon(&fields)?;
        Ok(if soft { constraint.soft() } else { constraint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marathon(fields: &[&str]) -> Result<Constraint, ConstraintError> {
        let owned: Vec<String> = fields.iter().map(|field| (*field).to_owned()).collect();
        Constraint::from_marathon(&owned)
    }

    fn agent(hostname: &str, labels: &[(&str, &str)]) -> AgentAttributes {
        AgentAttributes {
            agent_id: AgentId::new(format!("id-{hostname}")),
            hostname: hostname.to_owned(),
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn parses_every_marathon_operator_and_displays_it_back() {
        let cases = [
            (vec!["hostname", "UNIQUE"], "hostname:UNIQUE"),
            (vec!["rack", "CLUSTER", "rack-1"], "rack:CLUSTER:rack-1"),
            (vec!["rack", "CLUSTER"], "rack:CLUSTER"),
            (vec!["rack", "GROUP_BY"], "rack:GROUP_BY"),
            (vec!["rack", "GROUP_BY", "3"], "rack:GROUP_BY:3"),
            (vec!["zone", "LIKE", "us-.*"], "zone:LIKE:us-.*"),
            (vec!["zone", "UNLIKE", "eu-.*"], "zone:UNLIKE:eu-.*"),
            (vec!["hostname", "MAX_PER", "2"], "hostname:MAX_PER:2"),
            (vec!["disk", "IS", "ssd"], "disk:IS:ssd"),
            (vec!["disk", "is", "ssd"], "disk:IS:ssd"),
        ];
        for (fields, shown) in cases {
            let constraint = marathon(&fields).unwrap();
            assert_eq!(constraint.to_string(), shown);
            assert!(!constraint.is_soft());
            let reparsed: Constraint = shown.parse().unwrap();
            assert_eq!(reparsed, constraint, "{shown}");
        }
        assert_eq!(
            marathon(&["rack", "GROUP_BY", "3"]).unwrap().operator(),
            &Operator::GroupBy(Some(3))
        );
    }

    #[test]
    fn marathon_parse_errors_name_the_reason() {
        assert_eq!(marathon(&[]), Err(ConstraintError::Empty));
        assert_eq!(
            marathon(&[" ", "UNIQUE"]),
            Err(ConstraintError::MissingField { field: "attribute" })
        );
        assert_eq!(
            marathon(&["rack"]),
            Err(ConstraintError::MissingField { field: "operator" })
        );
        assert_eq!(
            marathon(&["rack", "NEAR"]),
            Err(ConstraintError::UnknownOperator {
                operator: "NEAR".into()
            })
        );
        let unique_value = marathon(&["hostname", "UNIQUE", "x"]).unwrap_err();
        assert!(unique_value.to_string().contains("UNIQUE takes no value"));
        let like_missing = marathon(&["zone", "LIKE"]).unwrap_err();
        assert!(like_missing.to_string().contains("LIKE needs a value"));
        let unlike_missing = marathon(&["zone", "UNLIKE"]).unwrap_err();
        assert!(unlike_missing.to_string().contains("UNLIKE needs a value"));
        let is_missing = marathon(&["disk", "IS"]).unwrap_err();
        assert!(is_missing.to_string().contains("IS needs a value"));
        let max_per = marathon(&["hostname", "MAX_PER", "two"]).unwrap_err();
        assert!(
            max_per
                .to_string()
                .contains("MAX_PER needs a non-negative integer")
        );
        let max_per_missing = marathon(&["hostname", "MAX_PER"]).unwrap_err();
        assert!(
            max_per_missing
                .to_string()
                .contains("MAX_PER needs a value")
        );
        let group_by = marathon(&["rack", "GROUP_BY", "-1"]).unwrap_err();
        assert!(group_by.to_string().contains("GROUP_BY"));
        let regex = marathon(&["zone", "LIKE", "us-("]).unwrap_err();
        assert!(matches!(regex, ConstraintError::InvalidRegex { .. }));
        assert!(regex.to_string().contains("regex \"us-(\" is invalid"));
        let too_many = marathon(&["a", "IS", "b", "c"]).unwrap_err();
        assert!(too_many.to_string().contains("at most 3 fields"));
    }

    #[test]
    fn expressions_parse_with_globs_regexes_and_soft_prefix() {
        let equals = Constraint::from_expression("disk==ssd").unwrap();
        assert_eq!(equals.to_string(), "disk==ssd");
        assert!(!equals.is_soft());
        let not_equals = Constraint::from_expression(" node != a ").unwrap();
        assert_eq!(not_equals.to_string(), "node!=a");
        let soft = Constraint::from_expression("~zone==/us-(east|west)/").unwrap();
        assert!(soft.is_soft());
        assert_eq!(soft.to_string(), "~zone==/us-(east|west)/");
        let reparsed: Constraint = "~zone==/us-(east|west)/".parse().unwrap();
        assert_eq!(reparsed, soft);
    }

    #[test]
    fn expression_parse_errors_name_the_reason() {
        assert_eq!(
            Constraint::from_expression("  "),
            Err(ConstraintError::Empty)
        );
        assert!(matches!(
            Constraint::from_expression("disk=ssd"),
            Err(ConstraintError::MalformedExpression { .. })
        ));
        assert_eq!(
            Constraint::from_expression("==ssd"),
            Err(ConstraintError::MissingField { field: "attribute" })
        );
        assert_eq!(
            Constraint::from_expression("disk=="),
            Err(ConstraintError::MissingField { field: "value" })
        );
        assert!(matches!(
            Constraint::from_expression("zone==/us-(/"),
            Err(ConstraintError::InvalidRegex { .. })
        ));
    }

    #[test]
    fn equals_supports_exact_glob_and_regex_values() {
        let east = agent("a1", &[("zone", "us-east"), ("disk", "ssd")]);
        let europe = agent("a2", &[("zone", "eu-west")]);
        let bare = agent("node-7", &[]);
        let check = |expression: &str, agent: &AgentAttributes| {
            Constraint::from_expression(expression)
                .unwrap()
                .matches_agent(agent)
                .unwrap()
        };
        assert!(check("disk==ssd", &east));
        assert!(!check("disk==ssd", &europe), "lacking the label fails ==");
        assert!(check("disk!=ssd", &europe), "lacking the label passes !=");
        assert!(!check("disk!=ssd", &east));
        assert!(check("zone==us-*", &east));
        assert!(!check("zone==us-*", &europe));
        assert!(check("zone==us-eas?", &east));
        assert!(!check("zone==us-ea?", &east), "? is exactly one character");
        assert!(check("zone==/us-(east|west)/", &east));
        assert!(!check("zone==/us-(east|west)/", &europe));
        assert!(!check("zone==/us/", &east), "regexes match the whole value");
        assert!(check("node==node-?", &bare), "node is the hostname");
        assert!(check("hostname!=a1", &bare));
        assert!(!check("node!=a1", &east));
        assert!(check("agent_id==id-a1", &east));
        assert!(check("zone==us.east", &agent("x", &[("zone", "us.east")])));
        assert!(
            !check("zone==us.*", &agent("x", &[("zone", "usXeast")])),
            "glob dots are literal"
        );
    }

    #[test]
    fn marathon_static_operators_judge_agents() {
        let east = agent(
            "a1",
            &[("zone", "us-east"), ("disk", "ssd"), ("rack", "r1")],
        );
        let bare = agent("a2", &[]);
        let check = |fields: &[&str], agent: &AgentAttributes| {
            marathon(fields).unwrap().matches_agent(agent)
        };
        assert_eq!(check(&["zone", "LIKE", "us-.*"], &east), Some(true));
        assert_eq!(check(&["zone", "LIKE", "us"], &east), Some(false));
        assert_eq!(check(&["zone", "LIKE", "us-.*"], &bare), Some(false));
        assert_eq!(check(&["zone", "UNLIKE", "eu-.*"], &east), Some(true));
        assert_eq!(check(&["zone", "UNLIKE", "us-.*"], &east), Some(false));
        assert_eq!(check(&["zone", "UNLIKE", "us-.*"], &bare), Some(true));
        assert_eq!(check(&["disk", "IS", "ssd"], &east), Some(true));
        assert_eq!(check(&["disk", "IS", "ssd"], &bare), Some(false));
        assert_eq!(check(&["rack", "CLUSTER", "r1"], &east), Some(true));
        assert_eq!(check(&["rack", "CLUSTER", "r2"], &east), Some(false));
        assert_eq!(check(&["rack", "CLUSTER", "r1"], &bare), Some(false));
        assert_eq!(check(&["hostname", "UNIQUE"], &east), None);
        assert_eq!(check(&["hostname", "MAX_PER", "1"], &east), None);
        assert_eq!(check(&["rack", "GROUP_BY"], &east), None);
        assert_eq!(check(&["rack", "CLUSTER"], &east), None);
    }
}
