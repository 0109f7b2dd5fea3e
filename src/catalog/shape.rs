//! What the refresher asks a PostgreSQL warehouse node and the catalog copy
//! to tell whether, and where, they differ.
//!
//! * The **gate** ([`PROBE_GATE`]) runs every `catalog.probe_interval`: the
//!   statistics collector's insert/update/delete counts of those catalogs,
//!   a few lookups whatever the catalog's size. Only when it moved (or
//!   every [`FULL_PROBE_EVERY`] periods, for changes not yet reported to
//!   the collector) does the probe proper run.
//! * The **probe** is one statement on the node: counts and sums of the
//!   row versions (`xmin`) of the user rows in the catalogs clients read. Any committed DDL inserts, updates
//!   or deletes such rows, so the answer moves; VACUUM and ANALYZE update
//!   pg_class in place and leave it alone. It reads only rows with OIDs of
//!   user objects (>= 16384, through the catalogs' OID indexes), so its
//!   cost grows with the user schema, not with the system catalogs. Its
//!   value only says "look again"; it is never compared with the copy.
//! * The **shapes** say what changed: per relation, an md5 over what
//!   catalog lookups can show of it (name, kind, owner, privileges,
//!   columns, defaults, constraints, indexes, triggers, view text,
//!   comments), keyed by OID, which binary-upgrade restores keep; plus one
//!   md5 over every other user object (schemas, types, functions,
//!   extensions, default privileges). Both are computed alike on the node
//!   and on the copy and compared directly, so no state needs to survive a
//!   restart of sluice: what differs is what needs copying. Nothing that a
//!   restore changes by itself goes in: OIDs of schemas and functions,
//!   which binary-upgrade dumps do not keep, are replaced by names.
//!
//! Every statement starts with [`MARKER`], so a node's statement log and
//! pg_stat_statements tell sluice's own catalog reads from clients'.

use std::collections::HashMap;

/// The full probe runs at least every this many probe periods, even when
/// the gate did not move.
pub const FULL_PROBE_EVERY: u32 = 6;

/// Leads every statement the probe and the refresh send to a node.
pub const MARKER: &str = "/* sluice catalog probe */";

/// The probe's first stage, O(1) in the catalog's size: the statistics
/// collector's counts of rows inserted, updated and deleted in each of the
/// catalogs the probe reads, and whether counting is on at all. A backend
/// reports its counts when it goes idle (at most about a second late), so
/// a DDL whose session goes on to a long statement without going idle is
/// only seen by the periodic full probe ([`PROBE`]).
pub const PROBE_GATE: &str = "/* sluice catalog probe */ SELECT current_setting('track_counts') || ' ' ||
 string_agg((pg_catalog.pg_stat_get_tuples_inserted(c) + pg_catalog.pg_stat_get_tuples_updated(c)
   + pg_catalog.pg_stat_get_tuples_deleted(c))::text, ' ' ORDER BY c::oid)
 FROM unnest('{pg_class,pg_attribute,pg_attrdef,pg_constraint,pg_trigger,pg_rewrite,pg_description,pg_namespace,pg_type,pg_proc,pg_enum,pg_extension,pg_default_acl,pg_sequence,pg_index,pg_inherits,pg_authid,pg_auth_members}'::pg_catalog.regclass[]) c";

/// The probe: one row, one text column.
pub const PROBE: &str = "/* sluice catalog probe */ SELECT concat_ws(' ',
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_class WHERE oid >= 16384 AND relpersistence <> 't'),
 (SELECT count(*) || ':' || coalesce(sum(a.xmin::text::int8), 0) FROM pg_catalog.pg_attribute a
    WHERE a.attrelid >= 16384 AND a.attnum > 0
      AND a.attrelid IN (SELECT oid FROM pg_catalog.pg_class WHERE oid >= 16384 AND relpersistence <> 't')),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_attrdef WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_constraint WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_trigger WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_rewrite WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_description WHERE objoid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_namespace WHERE oid >= 16384 OR nspname = 'public'),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_type WHERE oid >= 16384 AND typrelid = 0),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_proc WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_enum WHERE oid >= 16384),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_extension),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_default_acl),
 (SELECT count(*) || ':' || coalesce(sum(xmin::text::int8), 0) FROM pg_catalog.pg_sequence WHERE seqrelid >= 16384),
 (SELECT md5(string_agg(r::text, ';' ORDER BY r.oid)) FROM pg_catalog.pg_roles r),
 (SELECT md5(string_agg(m::text, ';' ORDER BY m::text)) FROM pg_catalog.pg_auth_members m))";

/// The roles part of the probe's answer (its last two fields), which
/// moves for every database alike.
pub fn probe_roles(probe: &str) -> &str {
    let mut cut = probe.len();
    for _ in 0..2 {
        cut = probe[..cut].rfind(' ').unwrap_or(0);
    }
    &probe[cut..]
}

/// Per relation: OID, schema, name, relkind and shape.
pub const RELATIONS: &str = "/* sluice catalog probe */ SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
  md5(concat_ws('|', c.relname, n.nspname, c.relkind, pg_catalog.pg_get_userbyid(c.relowner), c.relacl::text,
    c.reloptions::text, c.relpersistence, c.relispartition, c.reltype, c.reloftype,
    CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
    CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
    (SELECT string_agg(concat_ws(',', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.atthasdef,
            a.attisdropped, a.attidentity, a.attgenerated, a.attcollation, a.attacl::text, a.attoptions::text), ';' ORDER BY a.attnum)
       FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0),
    (SELECT string_agg(concat_ws(',', d.adnum, pg_catalog.pg_get_expr(d.adbin, d.adrelid)), ';' ORDER BY d.adnum)
       FROM pg_catalog.pg_attrdef d WHERE d.adrelid = c.oid),
    (SELECT string_agg(concat_ws(',', k.conname, k.contype, k.conkey::text, k.confrelid, k.confkey::text, k.condeferrable,
            k.convalidated, CASE WHEN k.contype IN ('c', 'x') THEN pg_catalog.pg_get_constraintdef(k.oid) END), ';' ORDER BY k.conname)
       FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid),
    (SELECT string_agg(concat_ws(',', ic.relname, i.indkey::text, i.indclass::text, i.indoption::text, i.indisunique,
            i.indisprimary, CASE WHEN i.indexprs IS NOT NULL OR i.indpred IS NOT NULL THEN pg_catalog.pg_get_indexdef(i.indexrelid) END),
            ';' ORDER BY ic.relname)
       FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid),
    (SELECT string_agg(concat_ws(',', t.tgname, t.tgtype, t.tgenabled, t.tgfoid), ';' ORDER BY t.tgname)
       FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
    (SELECT concat_ws(',', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
       FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid),
    (SELECT string_agg(concat_ws(',', ds.objsubid, ds.description), ';' ORDER BY ds.objsubid)
       FROM pg_catalog.pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass)
  ))
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid >= 16384 AND c.relkind NOT IN ('i', 'I', 't') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";

/// One md5 over every user object that is not a relation.
pub const OTHER_OBJECTS: &str = "/* sluice catalog probe */ SELECT md5(concat_ws('#',
 (SELECT string_agg(concat_ws(',', n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text,
         pg_catalog.obj_description(n.oid, 'pg_namespace')), ';' ORDER BY n.nspname)
    FROM pg_catalog.pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'),
 (SELECT string_agg(concat_ws(',', t.oid, t.typname, t.typnamespace::regnamespace::text, t.typtype, t.typbasetype, t.typtypmod,
         t.typnotnull, pg_catalog.pg_get_userbyid(t.typowner), t.typacl::text, pg_catalog.obj_description(t.oid, 'pg_type'),
         (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
         (SELECT string_agg(pg_catalog.pg_get_constraintdef(k.oid), ',' ORDER BY k.conname) FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid)),
         ';' ORDER BY t.oid)
    FROM pg_catalog.pg_type t WHERE t.oid >= 16384 AND t.typrelid = 0
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.oid = t.typelem AND e.typrelid <> 0)
      AND t.typnamespace NOT IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname LIKE 'pg\\_temp\\_%' OR nspname LIKE 'pg\\_toast\\_temp\\_%')),
 (SELECT string_agg(f, ';' ORDER BY f) FROM (SELECT concat_ws(',', p.proname, p.pronamespace::regnamespace::text,
         p.proargtypes::text, p.prorettype, p.prokind, md5(p.prosrc), pg_catalog.pg_get_userbyid(p.proowner), p.proacl::text,
         pg_catalog.obj_description(p.oid, 'pg_proc')) AS f
    FROM pg_catalog.pg_proc p WHERE p.oid >= 16384) fs),
 (SELECT string_agg(concat_ws(',', x.extname, x.extversion, x.extnamespace::regnamespace::text), ';' ORDER BY x.extname)
    FROM pg_catalog.pg_extension x),
 (SELECT string_agg(a, ';' ORDER BY a) FROM (SELECT concat_ws(',', pg_catalog.pg_get_userbyid(d.defaclrole),
         d.defaclnamespace::regnamespace::text, d.defaclobjtype, d.defaclacl::text) AS a
    FROM pg_catalog.pg_default_acl d) acls)))";

/// Relations of the copy that depend on the given ones (`$1`, an OID
/// array) and that dropping them would drop too: views over them, tables
/// with foreign keys to them, their partitions and children, transitively.
pub const DEPENDENTS: &str = "/* sluice catalog probe */ WITH RECURSIVE dep(oid) AS (
  SELECT unnest($1::pg_catalog.oid[])
  UNION
  SELECT x.oid FROM dep JOIN LATERAL (
      SELECT r.ev_class AS oid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r
        ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid
       WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = dep.oid
      UNION SELECT k.conrelid FROM pg_catalog.pg_constraint k WHERE k.confrelid = dep.oid AND k.conrelid <> 0
      UNION SELECT h.inhrelid FROM pg_catalog.pg_inherits h WHERE h.inhparent = dep.oid
  ) x ON true
)
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text
  FROM dep JOIN pg_catalog.pg_class c ON c.oid = dep.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

/// Per relation on the node: its OID and the row versions (`xmin`, and
/// sums and counts of them) of its pg_class row and of the catalog rows
/// that describe it (columns, indexes, constraints, defaults, triggers,
/// rules, comments, sequence parameters). Any DDL on a relation moves its
/// versions; reading them is one pass over those catalogs, several times
/// cheaper than the shapes ([`RELATIONS`]), which are then read
/// only for the relations that moved.
pub const VERSIONS: &str = "/* sluice catalog probe */ WITH
 a AS (SELECT attrelid AS r, sum(xmin::text::int8) || '/' || count(*) AS v FROM pg_catalog.pg_attribute
        WHERE attrelid >= 16384 AND attnum > 0 GROUP BY 1),
 i AS (SELECT x.indrelid AS r, sum(x.xmin::text::int8 + ic.xmin::text::int8) || '/' || count(*) AS v
         FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid >= 16384 GROUP BY 1),
 o AS (SELECT r, sum(v) || '/' || count(*) AS v FROM (
         SELECT conrelid AS r, xmin::text::int8 AS v FROM pg_catalog.pg_constraint WHERE conrelid >= 16384
         UNION ALL SELECT adrelid, xmin::text::int8 FROM pg_catalog.pg_attrdef WHERE adrelid >= 16384
         UNION ALL SELECT tgrelid, xmin::text::int8 FROM pg_catalog.pg_trigger WHERE tgrelid >= 16384
         UNION ALL SELECT ev_class, xmin::text::int8 FROM pg_catalog.pg_rewrite WHERE ev_class >= 16384
         UNION ALL SELECT objoid, xmin::text::int8 FROM pg_catalog.pg_description
                    WHERE objoid >= 16384 AND classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
         UNION ALL SELECT seqrelid, xmin::text::int8 FROM pg_catalog.pg_sequence WHERE seqrelid >= 16384) u GROUP BY 1)
SELECT c.oid::int8, concat_ws(' ', c.xmin, a.v, i.v, o.v)
  FROM pg_catalog.pg_class c LEFT JOIN a ON a.r = c.oid LEFT JOIN i ON i.r = c.oid LEFT JOIN o ON o.r = c.oid
 WHERE c.oid >= 16384 AND c.relkind NOT IN ('i', 'I', 't') AND c.relpersistence <> 't'";

/// The relations whose versions differ between `last` and `now`: changed,
/// new, or gone.
pub fn moved(last: &HashMap<u32, String>, now: &HashMap<u32, String>) -> Vec<u32> {
    let mut oids: Vec<u32> = now
        .iter()
        .filter(|(oid, v)| last.get(oid) != Some(v))
        .map(|(oid, _)| *oid)
        .chain(last.keys().filter(|oid| !now.contains_key(oid)).copied())
        .collect();
    oids.sort_unstable();
    oids
}

/// A relation as the shapes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind.
    pub kind: char,
}

impl Relation {
    /// The statement that drops it from the copy, with whatever depends on
    /// it there (the caller has made sure that is copied again too).
    pub fn drop_statement(&self) -> String {
        let what = match self.kind {
            'v' => "VIEW",
            'm' => "MATERIALIZED VIEW",
            'S' => "SEQUENCE",
            'f' => "FOREIGN TABLE",
            'c' => "TYPE",
            _ => "TABLE",
        };
        format!("DROP {what} IF EXISTS {} CASCADE", self.qualified())
    }

    /// `"schema"."name"`, quoted: an SQL name and, as pg_dump reads `-t`
    /// patterns, one that matches this relation only (wildcards inside
    /// double quotes are literal).
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, as an SQL string literal (standard_conforming_strings).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Relations by OID, each with its shape.
pub type Shapes = HashMap<u32, (Relation, String)>;

/// What differs between the node's relations and the copy's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// On the node, new or changed: copied again.
    pub copy: Vec<Relation>,
    /// On the copy only: dropped there.
    pub drop: Vec<Relation>,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.copy.is_empty() && self.drop.is_empty()
    }

    pub fn len(&self) -> usize {
        self.copy.len() + self.drop.len()
    }
}

/// Compares the node's relations with the copy's. A relation whose OID
/// now names another object on the node is dropped from the copy and
/// copied again.
pub fn compare(node: &Shapes, copy: &Shapes) -> Difference {
    let mut diff = Difference::default();
    for (oid, (rel, shape)) in node {
        match copy.get(oid) {
            Some((_, copy_shape)) if copy_shape == shape => {}
            Some((old, _)) => {
                diff.drop.push(old.clone());
                diff.copy.push(rel.clone());
            }
            None => diff.copy.push(rel.clone()),
        }
    }
    for (oid, (rel, _)) in copy {
        if !node.contains_key(oid) {
            diff.drop.push(rel.clone());
        }
    }
    diff.copy.sort_by_key(|r| r.oid);
    diff.drop.sort_by_key(|r| r.oid);
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(oid: u32, name: &str) -> Relation {
        Relation {
            oid,
            schema: "s".into(),
            name: name.into(),
            kind: 'r',
        }
    }

    fn shapes(list: &[(u32, &str, &str)]) -> Shapes {
        list.iter()
            .map(|(oid, name, shape)| (*oid, (rel(*oid, name), shape.to_string())))
            .collect()
    }

    #[test]
    fn moved_relations_are_the_changed_the_new_and_the_gone() {
        let last: HashMap<u32, String> = [(1, "a"), (2, "b"), (3, "c")]
            .map(|(o, v)| (o, v.to_string()))
            .into();
        let now: HashMap<u32, String> = [(1, "a"), (2, "b2"), (4, "d")]
            .map(|(o, v)| (o, v.to_string()))
            .into();
        assert_eq!(moved(&last, &now), [2, 3, 4]);
        assert!(moved(&now, &now).is_empty());
    }

    #[test]
    fn compare_finds_new_changed_and_dropped_relations() {
        let node = shapes(&[(1, "a", "x"), (2, "b", "y2"), (4, "d", "w")]);
        let copy = shapes(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z")]);
        let diff = compare(&node, &copy);
        assert_eq!(diff.copy, vec![rel(2, "b"), rel(4, "d")]);
        assert_eq!(diff.drop, vec![rel(2, "b"), rel(3, "c")]);
        assert!(compare(&node, &node).is_empty());
    }

    #[test]
    fn names_are_quoted_for_sql_and_for_pg_dump_patterns() {
        let r = Relation {
            oid: 1,
            schema: "My\"Schema".into(),
            name: "t*".into(),
            kind: 'v',
        };
        assert_eq!(r.qualified(), "\"My\"\"Schema\".\"t*\"");
        assert_eq!(
            r.drop_statement(),
            "DROP VIEW IF EXISTS \"My\"\"Schema\".\"t*\" CASCADE"
        );
    }

    #[test]
    fn the_roles_part_of_a_probe_is_its_last_two_fields() {
        assert_eq!(probe_roles("1:2 3:4 abc def"), " abc def");
    }

    #[test]
    fn every_statement_carries_the_marker() {
        for sql in [
            PROBE_GATE,
            PROBE,
            VERSIONS,
            RELATIONS,
            OTHER_OBJECTS,
            DEPENDENTS,
        ] {
            assert!(sql.starts_with(MARKER));
        }
    }
}
