//! `--expect` conditions such as `late<0.1%`, `gaps==0`, `p99<150`: checked against a report.

use std::collections::BTreeMap;

/// A condition that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --expect condition {0:?}: use NAME OP VALUE[%], e.g. late<0.1%, gaps==0, p99<150")]
pub struct BadCondition(pub String);

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    name: String,
    op: &'static str,
    value: f64,
    percent: bool,
}

const OPS: [&str; 6] = ["<=", ">=", "==", "!=", "<", ">"];

impl Condition {
    /// Parses `NAME OP VALUE[%]`.
    pub fn parse(raw: &str) -> Result<Condition, BadCondition> {
        let bad = || BadCondition(raw.to_owned());
        let text: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let (pos, op) = OPS
            .iter()
            .filter_map(|op| text.find(op).map(|p| (p, *op)))
            .min_by_key(|(p, _)| *p)
            .ok_or_else(bad)?;
        let name = text[..pos].to_owned();
        let mut value = &text[pos + op.len()..];
        let percent = value.ends_with('%');
        value = value.trim_end_matches('%').trim_end_matches("ms");
        let value: f64 = value.parse().map_err(|_| bad())?;
        if name.is_empty() {
            return Err(bad());
        }
        Ok(Condition { name, op, value, percent })
    }

    /// Checks the condition against named figures. Percent conditions read `NAME_percent`.
    pub fn check(&self, figures: &BTreeMap<String, f64>) -> Result<(), String> {
        let key = if self.percent { format!("{}_percent", self.name) } else { self.name.clone() };
        let actual = *figures.get(&key).ok_or_else(|| {
            let known: Vec<&String> = figures.keys().collect();
            format!("unknown figure {key:?} (known: {known:?})")
        })?;
        let ok = match self.op {
            "<" => actual < self.value,
            "<=" => actual <= self.value,
            ">" => actual > self.value,
            ">=" => actual >= self.value,
            "==" => actual == self.value,
            _ => actual != self.value,
        };
        let unit = if self.percent { "%" } else { "" };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {key} {} {}{unit}, got {actual}{unit}", self.op, self.value))
        }
    }
}

/// Parses a comma-separated list.
pub fn parse_all(raw: &str) -> Result<Vec<Condition>, BadCondition> {
    raw.split(',').filter(|s| !s.trim().is_empty()).map(Condition::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> BTreeMap<String, f64> {
        [("late", 3.0), ("late_percent", 0.05), ("gaps", 0.0), ("p99", 120.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn conditions_parse_and_check() {
        let f = figures();
        assert!(Condition::parse("late<0.1%").expect("parse").check(&f).is_ok());
        assert!(Condition::parse("late < 2").expect("parse").check(&f).is_err());
        assert!(Condition::parse("gaps==0").expect("parse").check(&f).is_ok());
        assert!(Condition::parse("p99<=100ms").expect("parse").check(&f).is_err());
        assert!(Condition::parse("nope>1").expect("parse").check(&f).is_err());
        assert_eq!(parse_all("late<0.1%, gaps==0").expect("parse").len(), 2);
        for bad in ["late", "<3", "late<abc", ""] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }
}
