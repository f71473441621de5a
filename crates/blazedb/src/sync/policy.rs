//! Selective sync: what a receiving peer asks to get.
//!
//! A [`SyncPolicy`] travels in SUBSCRIBE (receiver → sender). The sender applies it on top of
//! its access control (a relay's read rules): only records of the listed collections that
//! match the filter are sent, without the excluded fields.
//!
//! How the receiver's copy follows the view (the sender keeps no per-peer membership list):
//!
//! - **Steady state.** For a change to a record the peer may see, the sender looks at which
//!   fields changed. If none of them is read by the filter (or by the access rules), the
//!   record's membership cannot have changed: the delta goes out as usual, or nothing when the
//!   record is outside the view. If one is, the record may have moved: when it matches now the
//!   whole record goes out (move-in, or a harmless restatement when the peer already had it);
//!   when it no longer matches, an EVICT goes out (move-out).
//! - **The view itself changed** (a new policy on a live connection or at reconnect, other
//!   access claims, changed rules): the sender starts over with a snapshot of the new view,
//!   and the receiver drops ("evicts") what it holds of the sender's data that the snapshot no
//!   longer contains. See `sync/session/view.rs`.
//!
//! An eviction is local: no tombstone, no feed entry, nothing sent on; the record stays
//! intact on every other replica. A partial replica therefore never pushes "deletes" for
//! records that merely left its view.

use std::collections::BTreeSet;

use crate::codec::varint::write_u64;
use crate::codec::{DecodeError, Reader};
use crate::limits::{
    COLLECTION_NAME_BYTES_MAX, FIELD_NAME_BYTES_MAX, POLICY_COLLECTIONS_MAX, POLICY_FIELDS_MAX,
    POLICY_FILTER_BYTES_MAX,
};
use crate::query::{self, Expr, Params};
use crate::store::validate_collection_name;
use crate::{RecordId, Value};

/// What a receiver wants of the sender's data. The default asks for everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Only these collections (`None`: all of them).
    pub collections: Option<Vec<String>>,
    /// Only records matching this expression (the query language; on a relay it may use
    /// `$auth.*` claims).
    pub filter: Option<String>,
    /// Never send these fields (e.g. a large attachment), in any collection.
    pub exclude_fields: Vec<String>,
}

impl SyncPolicy {
    /// Everything: no restriction at all.
    pub fn everything() -> SyncPolicy {
        SyncPolicy::default()
    }

    /// True when the policy restricts nothing.
    pub fn is_everything(&self) -> bool {
        self.collections.is_none() && self.filter.is_none() && self.exclude_fields.is_empty()
    }

    /// Check the policy and prepare it for evaluation. Errors say what to fix.
    pub fn compile(&self) -> Result<CompiledPolicy, String> {
        let collections = match &self.collections {
            None => None,
            Some(list) => {
                if list.len() > POLICY_COLLECTIONS_MAX {
                    return Err(format!(
                        "a sync policy lists at most {POLICY_COLLECTIONS_MAX} collections ({} given)",
                        list.len()
                    ));
                }
                for c in list {
                    validate_collection_name(c).map_err(|e| format!("sync policy: {e}"))?;
                }
                Some(list.iter().cloned().collect::<BTreeSet<_>>())
            }
        };
        if self.exclude_fields.len() > POLICY_FIELDS_MAX {
            return Err(format!(
                "a sync policy excludes at most {POLICY_FIELDS_MAX} fields ({} given)",
                self.exclude_fields.len()
            ));
        }
        for f in &self.exclude_fields {
            if f.is_empty() || f.len() > FIELD_NAME_BYTES_MAX {
                return Err(format!(
                    "sync policy: excluded field name must be 1..={FIELD_NAME_BYTES_MAX} bytes"
                ));
            }
        }
        let exclude: BTreeSet<String> = self.exclude_fields.iter().cloned().collect();
        let filter = match &self.filter {
            None => None,
            Some(src) => {
                if src.len() > POLICY_FILTER_BYTES_MAX {
                    return Err(format!(
                        "sync filter is {} bytes; at most {POLICY_FILTER_BYTES_MAX}",
                        src.len()
                    ));
                }
                let expr = query::parse(src).map_err(|e| format!("sync filter: {e}"))?;
                if let Some(f) = expr.fields().intersection(&exclude).next() {
                    return Err(format!(
                        "sync filter reads field `{f}`, which the policy excludes: a replica \
                         could not tell which records match; drop it from the policy's \
                         `exclude_fields` or from its `filter`"
                    ));
                }
                Some(expr)
            }
        };
        let deps = filter.as_ref().map(Expr::fields).unwrap_or_default();
        Ok(CompiledPolicy {
            collections,
            filter,
            exclude,
            deps,
        })
    }

    /// The wire form (inside SUBSCRIBE; layout in docs/PROTOCOL.md §5.2).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match &self.collections {
            None => out.push(0),
            Some(list) => {
                out.push(1);
                write_u64(out, list.len() as u64);
                for c in list {
                    write_str(out, c);
                }
            }
        }
        write_str(out, self.filter.as_deref().unwrap_or(""));
        write_u64(out, self.exclude_fields.len() as u64);
        for f in &self.exclude_fields {
            write_str(out, f);
        }
    }

    /// Read the wire form.
    pub fn decode(r: &mut Reader<'_>) -> Result<SyncPolicy, DecodeError> {
        let collections = match r.u8()? {
            0 => None,
            1 => {
                let n = r.count("policy collections", POLICY_COLLECTIONS_MAX, 1)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(
                        r.str("collection name", COLLECTION_NAME_BYTES_MAX)?
                            .to_owned(),
                    );
                }
                Some(list)
            }
            b => return Err(DecodeError::Malformed(format!("bad policy flag {b}"))),
        };
        let filter = r.str("sync filter", POLICY_FILTER_BYTES_MAX)?;
        let filter = (!filter.is_empty()).then(|| filter.to_owned());
        let n = r.count("excluded fields", POLICY_FIELDS_MAX, 1)?;
        let mut exclude_fields = Vec::with_capacity(n);
        for _ in 0..n {
            exclude_fields.push(r.str("field name", FIELD_NAME_BYTES_MAX)?.to_owned());
        }
        Ok(SyncPolicy {
            collections,
            filter,
            exclude_fields,
        })
    }

    /// A canonical text of the policy: equal for policies that select the same data.
    pub fn fingerprint(&self) -> String {
        let mut colls = self.collections.clone();
        if let Some(c) = &mut colls {
            c.sort();
            c.dedup();
        }
        let mut ex = self.exclude_fields.clone();
        ex.sort();
        ex.dedup();
        format!(
            "collections={colls:?};filter={:?};exclude={ex:?}",
            self.filter.as_deref().unwrap_or("")
        )
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A checked [`SyncPolicy`], ready to evaluate.
#[derive(Clone, Debug, Default)]
pub struct CompiledPolicy {
    collections: Option<BTreeSet<String>>,
    filter: Option<Expr>,
    exclude: BTreeSet<String>,
    deps: BTreeSet<String>,
}

impl CompiledPolicy {
    /// The parameters its filter reads (`auth` for `$auth.sub`), which the sender must give.
    pub fn params(&self) -> BTreeSet<String> {
        self.filter.as_ref().map(Expr::params).unwrap_or_default()
    }

    /// Whether the collection is in the view.
    pub fn allows_collection(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|c| c.contains(collection))
    }

    /// Whether a live record matches the filter.
    pub fn matches(
        &self,
        id: RecordId,
        fields: &std::collections::BTreeMap<String, Value>,
        params: &Params,
    ) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.matches(&id.0, fields, params))
    }

    /// Whether a field is withheld.
    pub fn excludes(&self, field: &str) -> bool {
        self.exclude.contains(field)
    }

    /// Whether any field is withheld.
    pub fn excludes_any(&self) -> bool {
        !self.exclude.is_empty()
    }

    /// The excluded fields.
    pub fn excluded(&self) -> impl Iterator<Item = &String> {
        self.exclude.iter()
    }

    /// Whether the filter is set.
    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// Top-level fields the filter reads.
    pub fn filter_fields(&self) -> &BTreeSet<String> {
        &self.deps
    }

    /// True when nothing is restricted.
    pub fn is_everything(&self) -> bool {
        self.collections.is_none() && self.filter.is_none() && self.exclude.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library is used embedded, where there are no command-line options: its message
    /// names the policy's fields (the CLI adds its options).
    #[test]
    fn a_filter_on_an_excluded_field_is_refused_in_the_policys_terms() {
        let p = SyncPolicy {
            collections: None,
            filter: Some("blob != null".into()),
            exclude_fields: vec!["blob".into()],
        };
        let m = p.compile().unwrap_err();
        assert!(
            m.contains("drop it from the policy's `exclude_fields` or from its `filter`"),
            "{m}"
        );
        assert!(!m.contains("--"), "{m}");
    }

    #[test]
    fn wire_round_trip_and_fingerprint() {
        let p = SyncPolicy {
            collections: Some(vec!["b".into(), "a".into()]),
            filter: Some("owner == $auth.sub && n > 3".into()),
            exclude_fields: vec!["blob".into()],
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        let back = SyncPolicy::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, p);
        let mut q = p.clone();
        q.collections = Some(vec!["a".into(), "b".into()]);
        assert_eq!(p.fingerprint(), q.fingerprint());
        assert_ne!(p.fingerprint(), SyncPolicy::everything().fingerprint());
        let mut out = Vec::new();
        SyncPolicy::everything().encode(&mut out);
        assert_eq!(out, [0, 0, 0]);
    }

    #[test]
    fn compile_checks_what_it_can() {
        let bad = SyncPolicy {
            filter: Some("a = 1".into()),
            ..Default::default()
        };
        assert!(bad.compile().unwrap_err().contains("did you mean `==`?"));
        let reads_excluded = SyncPolicy {
            filter: Some("blob.size > 3".into()),
            exclude_fields: vec!["blob".into()],
            ..Default::default()
        };
        assert!(reads_excluded.compile().unwrap_err().contains("excludes"));
        let bad_coll = SyncPolicy {
            collections: Some(vec!["".into()]),
            ..Default::default()
        };
        assert!(bad_coll.compile().is_err());
        let ok = SyncPolicy {
            collections: Some(vec!["todos".into()]),
            filter: Some("done == false".into()),
            exclude_fields: vec!["attachment".into()],
        }
        .compile()
        .unwrap();
        assert!(ok.allows_collection("todos") && !ok.allows_collection("other"));
        assert!(ok.excludes("attachment"));
        let mut f = std::collections::BTreeMap::new();
        f.insert("done".to_owned(), Value::Bool(false));
        assert!(ok.matches(RecordId([1; 16]), &f, &Params::new()));
        f.insert("done".to_owned(), Value::Bool(true));
        assert!(!ok.matches(RecordId([1; 16]), &f, &Params::new()));
    }
}
