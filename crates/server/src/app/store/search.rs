//! The `q` of `GET /api/v1/recordings?q=...`: outside input turned into a bounded `LIKE`
//! pattern that matches the words literally (`%`, `_` and `\` lose their wildcard meaning).

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// A checked search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(String);

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Nothing to search for once trimmed.
    #[error("the query is empty")]
    Empty,
    /// Longer than [`MAX_QUERY_CHARS`].
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
}

impl SearchQuery {
    /// Checks `q`: trimmed, runs of white space and control characters made one space, 1 to
    /// [`MAX_QUERY_CHARS`] characters.
    pub fn parse(q: &str) -> Result<SearchQuery, SearchError> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::TooLong);
        }
        let words: Vec<&str> = q
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Err(SearchError::Empty);
        }
        Ok(SearchQuery(words.join(" ")))
    }

    /// The query as typed (cleaned).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `LIKE ... ESCAPE '\'` pattern: the query anywhere, literally.
    pub fn like_pattern(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('%');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queries_are_cleaned_bounded_and_literal() {
        assert_eq!(SearchQuery::parse("  salt \n\t breeze ").expect("ok").as_str(), "salt breeze");
        assert_eq!(SearchQuery::parse(" \u{0} "), Err(SearchError::Empty));
        assert_eq!(SearchQuery::parse(&"a".repeat(201)), Err(SearchError::TooLong));
        assert_eq!(
            SearchQuery::parse("100%_a\\b").expect("ok").like_pattern(),
            "%100\\%\\_a\\\\b%"
        );
    }

    proptest! {
        #[test]
        fn any_query_is_refused_or_a_bounded_literal_pattern(q in "\\PC{0,300}|.{0,300}") {
            match SearchQuery::parse(&q) {
                Ok(query) => {
                    prop_assert!(!query.as_str().is_empty());
                    prop_assert!(query.as_str().chars().count() <= MAX_QUERY_CHARS);
                    prop_assert!(!query.as_str().chars().any(|c| c.is_control()));
                    let p = query.like_pattern();
                    // Every wildcard inside is escaped: unescaping gives the query back.
                    let inner = &p[1..p.len() - 1];
                    let mut unescaped = String::new();
                    let mut chars = inner.chars();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => unescaped.push(chars.next().expect("an escaped char")),
                            '%' | '_' => prop_assert!(false, "bare wildcard in {}", p),
                            c => unescaped.push(c),
                        }
                    }
                    prop_assert_eq!(unescaped, query.as_str());
                }
                Err(SearchError::TooLong) => prop_assert!(q.chars().count() > MAX_QUERY_CHARS),
                Err(SearchError::Empty) => prop_assert!(q.trim().is_empty() || q.chars().all(|c| c.is_whitespace() || c.is_control())),
            }
        }
    }
}
