//! Row-level access rules: a TOML file with a table per collection, each holding a `read` and
//! a `write` expression in the query language (DESIGN decision 10) over the record's fields
//! and the caller's token claims (`$auth.*`):
//!
//! ```toml
//! [bugs]
//! read  = "assignee == $auth.sub || public == true"
//! write = "reporter == $auth.sub"
//!
//! [announcements]
//! read  = true                      # everyone (a boolean is a constant rule)
//! write = "$auth.role == \"admin\""
//! ```
//!
//! - A collection without a table is **closed**: nobody reads or writes it. A missing `read`
//!   or `write` key means `false`. Without a rules file at all, every authenticated client
//!   reads and writes everything.
//! - **read** is evaluated on the record as the relay holds it now, each time a change of it
//!   would be sent, and on each record a `/v1/query` returns. Deletes are sent to clients
//!   that may read the collection.
//! - **write** is evaluated per changed record when a client's transaction arrives:
//!   - insert (or a write that brings a deleted record back): on the record *after* the
//!     change;
//!   - update: on the record *before and after* the change — so a client can neither edit a
//!     record it may not write nor take one over by rewriting the field the rule checks
//!     (`reporter = "me"`);
//!   - delete: on the record *before* the delete.
//!
//!   One refused record refuses the whole transaction; nothing of it is applied or forwarded,
//!   and the writer's copy is restated to the relay's version (the core does this, see
//!   `Database::apply_changes_checked`).
//!
//! Rules are parsed and checked at startup: an invalid expression, an unknown key or a
//! parameter other than `$auth` is an error naming the file, the collection, the key and (for
//! expressions) the column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use blazedb::query::{parse, Expr, Node, Params};
use blazedb::{RecordId, Value};

use crate::error::RelayError;
use crate::limits::RULES_FILE_BYTES_MAX;

/// The access rules of a relay.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `None`: no rules file, everything is allowed.
    collections: Option<BTreeMap<String, CollectionRules>>,
}

/// The rules of one collection.
#[derive(Clone, Debug)]
pub struct CollectionRules {
    /// Who may receive records.
    pub read: Rule,
    /// Who may change records.
    pub write: Rule,
}

/// One rule.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Always true or always false (`read = true` in TOML, or a missing key).
    Constant(bool),
    /// An expression over the record and `$auth`.
    Expr(Expr),
}

impl Rule {
    /// Whether the rule holds for a record.
    pub fn allows(&self, id: RecordId, fields: &BTreeMap<String, Value>, params: &Params) -> bool {
        match self {
            Rule::Constant(b) => *b,
            Rule::Expr(e) => e.matches(&id.0, fields, params),
        }
    }

    /// The rule as written, for error messages.
    pub fn source(&self) -> String {
        match self {
            Rule::Constant(b) => b.to_string(),
            Rule::Expr(e) => e.source().to_owned(),
        }
    }
}

impl Rules {
    /// No rules file: every authenticated client may read and write everything.
    pub fn allow_all() -> Rules {
        Rules { collections: None }
    }

    /// Read and check a rules file.
    pub fn load(path: &Path) -> Result<Rules, RelayError> {
        let err = |message: String| RelayError::Rules {
            path: path.to_owned(),
            collection: None,
            key: None,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if meta.len() > RULES_FILE_BYTES_MAX {
            return Err(err(format!(
                "{} bytes is over the limit of {RULES_FILE_BYTES_MAX}",
                meta.len()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        Rules::parse(&text, path)
    }

    /// Parse rules from TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Rules, RelayError> {
        let err =
            |collection: Option<&str>, key: Option<&str>, message: String| RelayError::Rules {
                path: PathBuf::from(path),
                collection: collection.map(str::to_owned),
                key: key.map(str::to_owned),
                message,
            };
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            err(
                None,
                None,
                format!("not valid TOML: {}", e.to_string().trim()),
            )
        })?;
        let mut collections = BTreeMap::new();
        for (name, value) in table {
            let c = Some(name.as_str());
            blazedb::store::validate_collection_name(&name)
                .map_err(|e| err(c, None, e.to_string()))?;
            let toml::Value::Table(t) = value else {
                return Err(err(
                    c,
                    None,
                    "expected a table: write `[collection]` with `read = \"...\"` and \
                     `write = \"...\"` under it"
                        .into(),
                ));
            };
            let mut read = Rule::Constant(false);
            let mut write = Rule::Constant(false);
            for (key, v) in t {
                let slot = match key.as_str() {
                    "read" => &mut read,
                    "write" => &mut write,
                    other => {
                        return Err(err(
                            c,
                            Some(other),
                            "unknown key: a collection's table holds `read` and `write`".into(),
                        ))
                    }
                };
                let k = Some(key.as_str());
                *slot = match v {
                    toml::Value::Boolean(b) => Rule::Constant(b),
                    toml::Value::String(s) => {
                        let expr = parse(&s).map_err(|e| err(c, k, one_line(&e)))?;
                        check_params(expr.root()).map_err(|m| err(c, k, m))?;
                        Rule::Expr(expr)
                    }
                    other => {
                        return Err(err(
                            c,
                            k,
                            format!(
                                "expected an expression in quotes or true/false, found a {}",
                                other.type_str()
                            ),
                        ))
                    }
                };
            }
            collections.insert(name, CollectionRules { read, write });
        }
        Ok(Rules {
            collections: Some(collections),
        })
    }

    /// What looks like a mistake in rules that are otherwise valid, one sentence each, for
    /// the relay to print at startup: rules reading `$auth` on a relay without
    /// authentication (every claim is unknown there, so they match nothing), and collections
    /// of the store that no table names (closed to everyone: often a misspelt table, such as
    /// `[bug]` for `bugs`).
    pub fn warnings(&self, authenticated: bool, store_collections: &[String]) -> Vec<String> {
        let Some(tables) = &self.collections else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !authenticated {
            let with_auth: Vec<String> = tables
                .iter()
                .flat_map(|(name, c)| {
                    [("read", &c.read), ("write", &c.write)]
                        .into_iter()
                        .filter(|(_, rule)| match rule {
                            Rule::Expr(e) => {
                                let mut params = BTreeSet::new();
                                e.root().collect_params(&mut params);
                                params.contains("auth")
                            }
                            Rule::Constant(_) => false,
                        })
                        .map(move |(key, _)| format!("[{name}] {key}"))
                })
                .collect();
            if !with_auth.is_empty() {
                out.push(format!(
                    "{} use $auth, but this relay requires no credentials, so every $auth \
                     claim is unknown and those rules match nothing: start it with --token, \
                     --jwt-secret or --jwt-public-key",
                    with_auth.join(", ")
                ));
            }
        }
        let unnamed: Vec<&str> = store_collections
            .iter()
            .map(String::as_str)
            .filter(|c| !tables.contains_key(*c))
            .collect();
        if !unnamed.is_empty() {
            let named: Vec<&str> = tables.keys().map(String::as_str).collect();
            out.push(format!(
                "the store's collections {} have no table in the rules file, so nobody may \
                 read or write them (its tables: {}); add a table for each that clients use",
                unnamed.join(", "),
                if named.is_empty() {
                    "none".to_owned()
                } else {
                    named.join(", ")
                }
            ));
        }
        out
    }

    /// Top-level fields the read rule of a collection looks at (empty for constant rules and
    /// without a rules file).
    pub fn read_fields(&self, collection: &str) -> BTreeSet<String> {
        match self.collection(collection).map(|r| &r.read) {
            Some(Rule::Expr(e)) => e.fields(),
            _ => BTreeSet::new(),
        }
    }

    /// Every read rule as written, in collection order: part of a connection's view text.
    pub fn read_rules_text(&self) -> String {
        match &self.collections {
            None => "no rules".to_owned(),
            Some(c) => c
                .iter()
                .map(|(name, r)| format!("{name}:{};", r.read.source()))
                .collect(),
        }
    }

    /// Whether a rules file is in force.
    pub fn is_restricted(&self) -> bool {
        self.collections.is_some()
    }

    /// The rules of a collection (`None`: closed, or no rules file — see
    /// [`Rules::is_restricted`]).
    pub fn collection(&self, name: &str) -> Option<&CollectionRules> {
        self.collections.as_ref()?.get(name)
    }

    /// Whether anything of a collection may be read (false for a closed collection).
    pub fn can_read_collection(&self, collection: &str) -> bool {
        match &self.collections {
            None => true,
            Some(c) => c
                .get(collection)
                .is_some_and(|r| !matches!(r.read, Rule::Constant(false))),
        }
    }

    /// Whether the caller may receive this record.
    pub fn can_read(
        &self,
        collection: &str,
        id: RecordId,
        fields: &BTreeMap<String, Value>,
        params: &Params,
    ) -> bool {
        match &self.collections {
            None => true,
            Some(c) => c
                .get(collection)
                .is_some_and(|r| r.read.allows(id, fields, params)),
        }
    }

    /// Whether the caller may change a record from `before` to `after` (`None`: absent or
    /// deleted); see the module docs for which side the rule is evaluated on. `Err` is the
    /// reason sent back to the writer.
    pub fn check_write(
        &self,
        collection: &str,
        id: RecordId,
        before: Option<&BTreeMap<String, Value>>,
        after: Option<&BTreeMap<String, Value>>,
        params: &Params,
    ) -> Result<(), String> {
        let Some(c) = &self.collections else {
            return Ok(());
        };
        let Some(rules) = c.get(collection) else {
            return Err(format!(
                "collection {collection:?} is closed: the relay's rules have no [{collection}] \
                 table"
            ));
        };
        // One message for every refusal: "update" (against "insert"), or "delete" of a record
        // (against a tombstone at a free id), told a writer who may not read the record that
        // it exists.
        let denied = || {
            Err(format!(
                "write in {collection:?} refused by the write rule `{}`",
                rules.write.source()
            ))
        };
        match (before, after) {
            (None, Some(a)) if !rules.write.allows(id, a, params) => denied(),
            (Some(b), Some(a))
                if !rules.write.allows(id, b, params) || !rules.write.allows(id, a, params) =>
            {
                denied()
            }
            (Some(b), None) if !rules.write.allows(id, b, params) => denied(),
            // A change that leaves an absent record absent (a tombstone at an id nobody
            // holds, cells of a deleted record) is judged on a record with no fields: with a
            // rule that reads a field, refused — or a client could plant tombstones, up to
            // the clock-skew limit ahead, at ids of records others are about to create.
            (None, None) if !rules.write.allows(id, &BTreeMap::new(), params) => denied(),
            _ => Ok(()),
        }
    }
}

/// Rules (and `/v1/query` expressions) may only use `$auth`: any other parameter would
/// always be unknown, silently denying everything — almost certainly a typo.
pub(crate) fn check_params(node: &Node) -> Result<(), String> {
    match node {
        Node::Param { name, .. } if name != "auth" => Err(format!(
            "unknown parameter ${name}: rules can use the token's claims as $auth.<claim>"
        )),
        Node::Param { .. } | Node::Literal(_) | Node::Field(_) | Node::RecordId => Ok(()),
        Node::List(items) | Node::And(items) | Node::Or(items) => {
            items.iter().try_for_each(check_params)
        }
        Node::Not(n) | Node::Exists(n) => check_params(n),
        Node::Binary { lhs, rhs, .. } => {
            check_params(lhs)?;
            check_params(rhs)
        }
    }
}

/// A rule's syntax error on one line, as the relay's startup error is printed: the position
/// is within the expression (its line counted inside the quoted string, not the file), and
/// the offending source line is quoted instead of drawn with a caret under it.
fn one_line(e: &blazedb::query::QueryError) -> String {
    match e {
        blazedb::query::QueryError::Syntax {
            line,
            column,
            message,
            excerpt,
            ..
        } => {
            let at = if *line == 1 {
                format!("column {column}")
            } else {
                format!("line {line}, column {column} of the expression")
            };
            let source = excerpt.lines().next().unwrap_or_default().trim();
            format!("invalid expression at {at}: {message} (in `{source}`)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<Rules, RelayError> {
        Rules::parse(text, Path::new("rules.toml"))
    }

    fn rec(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn auth(sub: &str) -> Params {
        let mut c = crate::auth::Claims::new();
        c.insert("sub".into(), Value::from(sub));
        crate::auth::params(&c)
    }

    const BUGS: &str = r#"
        [bugs]
        read = "assignee == $auth.sub || public == true"
        write = "reporter == $auth.sub"
        [news]
        read = true
    "#;

    /// A refusal does not depend on what the relay holds: "update refused" against "insert
    /// refused" told a writer who may not read a record that it exists.
    #[test]
    fn a_refusal_does_not_say_whether_the_record_existed() {
        let r = rules(BUGS).unwrap();
        let id = RecordId([1; 16]);
        let bug = rec(&[("assignee", "carol".into()), ("reporter", "alice".into())]);
        let bob = auth("bob");
        assert!(!r.can_read("bugs", id, &bug, &bob));
        let planted = rec(&[("reporter", "alice".into())]);
        let over_existing = r
            .check_write("bugs", id, Some(&bug), Some(&planted), &bob)
            .unwrap_err();
        let at_free_id = r
            .check_write("bugs", id, None, Some(&planted), &bob)
            .unwrap_err();
        assert_eq!(over_existing, at_free_id);
        let delete_existing = r
            .check_write("bugs", id, Some(&bug), None, &bob)
            .unwrap_err();
        let delete_absent = r.check_write("bugs", id, None, None, &bob).unwrap_err();
        assert_eq!(delete_existing, delete_absent);
    }

    #[test]
    fn read_and_write_rules() {
        let r = rules(BUGS).unwrap();
        let id = RecordId([1; 16]);
        let bug = rec(&[
            ("assignee", "bob".into()),
            ("reporter", "alice".into()),
            ("public", false.into()),
        ]);
        assert!(r.can_read("bugs", id, &bug, &auth("bob")));
        assert!(!r.can_read("bugs", id, &bug, &auth("carol")));
        assert!(r.can_read_collection("bugs") && r.can_read_collection("news"));
        assert!(!r.can_read_collection("secrets"), "no table: closed");
        assert!(!r.can_read("secrets", id, &bug, &auth("bob")));

        let alice = auth("alice");
        assert!(r.check_write("bugs", id, None, Some(&bug), &alice).is_ok());
        assert!(r
            .check_write("bugs", id, None, Some(&bug), &auth("bob"))
            .is_err());
        // Taking over alice's bug by rewriting the reporter is refused.
        let hijacked = rec(&[("reporter", "bob".into())]);
        let e = r
            .check_write("bugs", id, Some(&bug), Some(&hijacked), &auth("bob"))
            .unwrap_err();
        assert!(
            e.contains("write") && e.contains("reporter == $auth.sub"),
            "{e}"
        );
        assert!(r.check_write("bugs", id, Some(&bug), None, &alice).is_ok());
        assert!(r
            .check_write("bugs", id, Some(&bug), None, &auth("bob"))
            .is_err());
        // `news` has no write key: nobody writes.
        assert!(r.check_write("news", id, None, Some(&bug), &alice).is_err());
        let e = r
            .check_write("secrets", id, None, Some(&bug), &alice)
            .unwrap_err();
        assert!(e.contains("closed"), "{e}");
    }

    /// A token without the claim a rule compares holds nothing the rule grants: not the
    /// records lacking the field (both used to read as null and match), not a write of a
    /// record without it, and not through a negated rule either.
    #[test]
    fn a_claim_the_token_lacks_grants_nothing() {
        let r = rules(BUGS).unwrap();
        let id = RecordId([1; 16]);
        let mut claims = crate::auth::Claims::new();
        claims.insert("role".into(), Value::from("guest"));
        let guest = crate::auth::params(&claims);
        let unassigned = rec(&[("title", "x".into()), ("public", false.into())]);
        assert!(!r.can_read("bugs", id, &unassigned, &guest));
        assert!(r
            .check_write("bugs", id, None, Some(&unassigned), &guest)
            .is_err());
        let public = rec(&[("public", true.into())]);
        assert!(
            r.can_read("bugs", id, &public, &guest),
            "the other side of ||"
        );
        // Nor may anyone whose rule reads a field leave a tombstone at an id nobody holds.
        assert!(r
            .check_write("bugs", id, None, None, &auth("alice"))
            .is_err());
        let open_rules = rules("[notes]\nread = true\nwrite = true\n").unwrap();
        assert!(open_rules
            .check_write("notes", id, None, None, &guest)
            .is_ok());
        let negated = rules("[bugs]\nread = \"!(owner == $auth.sub)\"\n").unwrap();
        assert!(!negated.can_read("bugs", id, &public, &guest));
        assert!(negated.can_read("bugs", id, &public, &auth("alice")));
    }

    #[test]
    fn no_rules_file_allows_everything() {
        let r = Rules::allow_all();
        let id = RecordId([1; 16]);
        assert!(r.can_read("any", id, &BTreeMap::new(), &Params::new()));
        assert!(r.check_write("any", id, None, None, &Params::new()).is_ok());
    }

    #[test]
    fn errors_name_file_collection_key_and_column() {
        let e = rules("[bugs]\nread = \"status = 1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rules file rules.toml: [bugs] read: invalid expression at column 8"),
            "{e}"
        );
        assert!(!e.contains('\n') && e.contains("(in `status = 1`)"), "{e}");
        // A rule of several lines: the line is the expression's, and says so.
        let e = rules("[bugs]\nread = \"a == 1 &&\\n  b = 2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at line 2, column 5 of the expression:") && e.ends_with("(in `b = 2`)"),
            "{e}"
        );
        let e = rules("[bugs]\nreed = \"true\"\n").unwrap_err().to_string();
        assert!(e.contains("[bugs] reed: unknown key"), "{e}");
        let e = rules("[bugs]\nread = \"owner == $user\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[bugs] read: unknown parameter $user"), "{e}");
        let e = rules("bugs = 1\n").unwrap_err().to_string();
        assert!(e.contains("[bugs]: expected a table"), "{e}");
        let e = rules("[bugs\n").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = rules("[bugs]\nwrite = 5\n").unwrap_err().to_string();
        assert!(e.contains("[bugs] write: expected an expression"), "{e}");
    }
}
