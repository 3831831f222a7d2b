//! TOML rule scorers: a small declarative language for the many tests whose scoring is
//! a few comparisons. Documented with examples in `plugins/RULES.md`.
//!
//! A file names its test names and a start (`blocking`: OONI's five `blocking_*` keys
//! at 0.0, or `empty`), then lists rules. Each rule has an optional condition (`when`)
//! and actions applied in this order: `fail`, `set`, `add`, then `stop`. Rules run top
//! to bottom; keys keep the position of their first assignment, as in a Python dict.

use crate::getters::{kind, py_eq, truthy};
use crate::measurement::Measurement;
use crate::scores::{init_scores, ScoreError, Scorer, ScorerInfo, Scores};
use ooni_scorer_sdk::projection::{Read, Reads};
use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuleError {
    #[error("{0}")]
    Toml(String),
    #[error("rule {rule}: {message}")]
    Rule { rule: usize, message: String },
    #[error("{0}")]
    Header(String),
}

/// A path of object keys from the measurement (or, inside `where`, from the item);
/// `.` alone is the value itself.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<String>);

impl Path {
    fn parse(s: &str) -> Result<Path, String> {
        if s == "." {
            return Ok(Path(Vec::new()));
        }
        if s.is_empty() || s.split('.').any(str::is_empty) {
            return Err(format!(
                "bad path {s:?}: use dotted keys like test_keys.failure"
            ));
        }
        Ok(Path(s.split('.').map(str::to_owned).collect()))
    }

    fn subst(&self, each: &str) -> Path {
        Path(self.0.iter().map(|p| p.replace("{}", each)).collect())
    }
}

/// Where a value is read from and what a missing one reads as.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    path: Path,
    /// Python `d.get(k, x)`: used when the last key is absent (not when it is null).
    missing_as: Option<Value>,
    /// OONI's `g_or(d, k, x)`: used when the value is absent or null.
    or: Option<Value>,
}

/// Reads `path` with OONI's semantics: a missing or null step reads as missing; a
/// step into something that is not an object is an error (Python raises).
fn lookup<'a>(root: &'a Value, path: &Path) -> Result<Lookup<'a>, String> {
    let mut cur = root;
    for (i, key) in path.0.iter().enumerate() {
        let obj = match cur {
            Value::Object(o) => o,
            Value::Null if i > 0 => return Ok(Lookup::Missing),
            other => {
                let at = if i == 0 {
                    "the value".to_owned()
                } else {
                    path.0[..i].join(".")
                };
                return Err(format!("{at} is a {}, not an object", kind(other)));
            }
        };
        match obj.get(key) {
            None => return Ok(Lookup::Missing),
            Some(v) => cur = v,
        }
    }
    Ok(Lookup::Found(cur))
}

enum Lookup<'a> {
    Missing,
    Found(&'a Value),
}

impl Source {
    fn read<'a>(&'a self, root: &'a Value) -> Result<Option<&'a Value>, String> {
        Ok(match lookup(root, &self.path)? {
            Lookup::Missing => self.missing_as.as_ref().or(self.or.as_ref()),
            Lookup::Found(Value::Null) => self.or.as_ref().or(Some(&Value::Null)),
            Lookup::Found(v) => Some(v),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Truthy(bool),
    IsNull(bool),
    Present(bool),
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Is(Value),
    StartsWith(String),
    Contains(String),
    Cmp(&'static str, f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Always,
    Check(Source, Test),
    /// The key is absent (a JSON null counts as present): Python's `k not in d`.
    Missing(Path),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Items {
        path: Path,
        quantifier: Quantifier,
        cond: Box<Cond>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Quantifier {
    Any,
    All,
    Count(&'static str, f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    From(Source),
    Object(Vec<(String, Expr)>),
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    each: Vec<String>,
    when: Cond,
    fail: Option<String>,
    set: Vec<(Vec<String>, Expr)>,
    add: Vec<(String, Expr)>,
    stop: bool,
}

impl Rule {
    /// What `{}` stands for in each run of the rule: once as nothing, or once per
    /// `each` entry.
    fn substitutions(&self) -> Vec<Option<&str>> {
        if self.each.is_empty() {
            vec![None]
        } else {
            self.each.iter().map(|s| Some(s.as_str())).collect()
        }
    }
}

/// A compiled rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleScorer {
    pub name: String,
    pub version: String,
    pub test_names: Vec<String>,
    start_blocking: bool,
    rules: Vec<Rule>,
    /// What the rules read: measurements are cut down to it before they are parsed.
    reads: Reads,
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn as_str<'a>(v: &'a toml::Value, what: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("{what} must be a string"))
}

fn number(v: &toml::Value, what: &str) -> Result<f64, String> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) => Ok(*f),
        _ => Err(format!("{what} must be a number")),
    }
}

const COMPARATORS: [&str; 4] = ["gt", "ge", "lt", "le"];

/// The tests a `path` condition takes (exactly one).
const PATH_TESTS: [&str; 11] = [
    "eq",
    "ne",
    "in",
    "not_in",
    "is",
    "starts_with",
    "contains",
    "gt",
    "ge",
    "lt",
    "le",
];

fn comparator(name: &str) -> &'static str {
    COMPARATORS
        .iter()
        .find(|c| **c == name)
        .copied()
        .unwrap_or("eq")
}

fn parse_source(t: &toml::Table, key: &str) -> Result<Source, String> {
    Ok(Source {
        path: Path::parse(as_str(&t[key], key)?)?,
        missing_as: t.get("missing_as").map(toml_to_json),
        or: t.get("or").map(toml_to_json),
    })
}

fn parse_cond(v: &toml::Value) -> Result<Cond, String> {
    let t = v.as_table().ok_or("a condition must be a table")?;
    let known: Vec<&str> = [
        "truthy",
        "falsy",
        "null",
        "present",
        "missing",
        "path",
        "missing_as",
        "or",
        "all",
        "any",
        "not",
        "any_item",
        "all_items",
        "count_items",
        "where",
    ]
    .into_iter()
    .chain(PATH_TESTS)
    .collect();
    if let Some(k) = t.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown condition key {k:?}"));
    }
    // Each form takes its own keys only: a stray key would be silently ignored.
    let forms: [(&str, &[&str]); 11] = [
        ("all", &[]),
        ("any", &[]),
        ("not", &[]),
        ("any_item", &["where"]),
        ("all_items", &["where"]),
        ("count_items", &["where", "eq", "gt", "ge", "lt", "le"]),
        ("truthy", &[]),
        ("falsy", &[]),
        ("null", &[]),
        ("present", &[]),
        ("missing", &[]),
    ];
    if let Some((form, extra)) = forms.iter().find(|(f, _)| t.contains_key(*f)) {
        if let Some(k) = t
            .keys()
            .find(|k| k.as_str() != *form && !extra.contains(&k.as_str()))
        {
            return Err(format!("`{k}` does not go with `{form}`"));
        }
    } else {
        let tests = PATH_TESTS;
        let n = t.keys().filter(|k| tests.contains(&k.as_str())).count();
        if n > 1 {
            return Err("a `path` condition takes exactly one test".into());
        }
        if t.contains_key("where") {
            return Err("`where` goes with any_item, all_items or count_items".into());
        }
    }
    let list = |key: &str| -> Result<Vec<Cond>, String> {
        t[key]
            .as_array()
            .ok_or(format!("{key} must be an array of conditions"))?
            .iter()
            .map(parse_cond)
            .collect()
    };
    if t.contains_key("all") {
        return Ok(Cond::All(list("all")?));
    }
    if t.contains_key("any") {
        return Ok(Cond::Any(list("any")?));
    }
    if let Some(n) = t.get("not") {
        return Ok(Cond::Not(Box::new(parse_cond(n)?)));
    }
    for (key, quantifier) in [
        ("any_item", Some(Quantifier::Any)),
        ("all_items", Some(Quantifier::All)),
        ("count_items", None),
    ] {
        if let Some(p) = t.get(key) {
            let path = Path::parse(as_str(p, key)?)?;
            let cond = Box::new(parse_cond(
                t.get("where")
                    .ok_or(format!("{key} needs a `where` condition"))?,
            )?);
            let quantifier = match quantifier {
                Some(q) => q,
                None => {
                    let op = COMPARATORS
                        .iter()
                        .chain(["eq"].iter())
                        .find(|c| t.contains_key(**c))
                        .ok_or("count_items needs one of eq, gt, ge, lt, le")?;
                    Quantifier::Count(comparator(op), number(&t[*op], op)?)
                }
            };
            return Ok(Cond::Items {
                path,
                quantifier,
                cond,
            });
        }
    }
    for (key, want) in [
        ("truthy", Test::Truthy(true)),
        ("falsy", Test::Truthy(false)),
        ("null", Test::IsNull(true)),
        ("present", Test::Present(true)),
    ] {
        if t.contains_key(key) {
            let src = Source {
                path: Path::parse(as_str(&t[key], key)?)?,
                missing_as: None,
                or: None,
            };
            return Ok(Cond::Check(src, want));
        }
    }
    if let Some(p) = t.get("missing") {
        return Ok(Cond::Missing(Path::parse(as_str(p, "missing")?)?));
    }
    if !t.contains_key("path") {
        return Err("a condition needs `path` and a test, or one of truthy, falsy, null, present, missing, all, any, not, any_item, all_items, count_items".into());
    }
    let src = parse_source(t, "path")?;
    let arr = |key: &str| -> Result<Vec<Value>, String> {
        Ok(t[key]
            .as_array()
            .ok_or(format!("{key} must be an array"))?
            .iter()
            .map(toml_to_json)
            .collect())
    };
    let test = if let Some(v) = t.get("eq") {
        Test::Eq(toml_to_json(v))
    } else if let Some(v) = t.get("ne") {
        Test::Ne(toml_to_json(v))
    } else if t.contains_key("in") {
        Test::In(arr("in")?)
    } else if t.contains_key("not_in") {
        Test::NotIn(arr("not_in")?)
    } else if let Some(v) = t.get("is") {
        Test::Is(toml_to_json(v))
    } else if let Some(v) = t.get("starts_with") {
        Test::StartsWith(as_str(v, "starts_with")?.to_owned())
    } else if let Some(v) = t.get("contains") {
        Test::Contains(as_str(v, "contains")?.to_owned())
    } else if let Some(op) = COMPARATORS.iter().find(|c| t.contains_key(**c)) {
        Test::Cmp(comparator(op), number(&t[*op], op)?)
    } else {
        return Err("a `path` condition needs one of eq, ne, in, not_in, is, starts_with, contains, gt, ge, lt, le".into());
    };
    Ok(Cond::Check(src, test))
}

fn parse_expr(v: &toml::Value) -> Result<Expr, String> {
    match v {
        toml::Value::Table(t) if t.contains_key("from") => {
            if let Some(k) = t
                .keys()
                .find(|k| !["from", "missing_as", "or"].contains(&k.as_str()))
            {
                return Err(format!("unknown key {k:?} next to `from`"));
            }
            Ok(Expr::From(parse_source(t, "from")?))
        }
        toml::Value::Table(t) => Ok(Expr::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), parse_expr(v)?)))
                .collect::<Result<_, String>>()?,
        )),
        other => Ok(Expr::Literal(toml_to_json(other))),
    }
}

fn parse_rule(v: &toml::Value) -> Result<Rule, String> {
    let t = v.as_table().ok_or("a rule must be a table")?;
    if let Some(k) = t
        .keys()
        .find(|k| !["each", "when", "fail", "set", "add", "stop"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown rule key {k:?} (expected each, when, fail, set, add, stop)"
        ));
    }
    let each = match t.get("each") {
        None => Vec::new(),
        Some(a) => a
            .as_array()
            .ok_or("each must be an array of strings")?
            .iter()
            .map(|s| as_str(s, "each item").map(str::to_owned))
            .collect::<Result<_, _>>()?,
    };
    let table_of = |key: &str| -> Result<Vec<(String, Expr)>, String> {
        match t.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Table(m)) => m
                .iter()
                .map(|(k, v)| Ok((k.clone(), parse_expr(v)?)))
                .collect(),
            Some(_) => Err(format!("{key} must be a table")),
        }
    };
    Ok(Rule {
        each,
        when: t
            .get("when")
            .map(parse_cond)
            .transpose()?
            .unwrap_or(Cond::Always),
        fail: t
            .get("fail")
            .map(|f| as_str(f, "fail").map(str::to_owned))
            .transpose()?,
        set: table_of("set")?
            .into_iter()
            .map(|(k, e)| (k.split('.').map(str::to_owned).collect(), e))
            .collect(),
        add: table_of("add")?,
        stop: t
            .get("stop")
            .map(|s| s.as_bool().ok_or("stop must be true or false"))
            .transpose()?
            .unwrap_or(false),
    })
}

impl RuleScorer {
    pub fn parse(text: &str) -> Result<RuleScorer, RuleError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| RuleError::Toml(e.to_string()))?;
        let header = |m: &str| RuleError::Header(m.to_owned());
        if let Some(k) = doc.keys().find(|k| {
            !["abi", "name", "version", "test_names", "start", "rule"].contains(&k.as_str())
        }) {
            return Err(header(&format!("unknown top-level key {k:?}")));
        }
        if let Some(abi) = doc.get("abi") {
            if abi.as_integer() != Some(1) {
                return Err(header(&format!(
                    "abi = {abi} is not supported (this engine speaks 1)"
                )));
            }
        }
        let string = |k: &str| -> Result<String, RuleError> {
            doc.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| header(&format!("`{k}` (a string) is required")))
        };
        let test_names: Vec<String> = doc
            .get("test_names")
            .and_then(|v| v.as_array())
            .ok_or_else(|| header("`test_names` (an array of strings) is required"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| header("test_names must hold strings"))
            })
            .collect::<Result<_, _>>()?;
        if test_names.is_empty() {
            return Err(header("test_names is empty"));
        }
        let start_blocking = match doc.get("start").map(|v| v.as_str()) {
            None | Some(Some("blocking")) => true,
            Some(Some("empty")) => false,
            _ => return Err(header("start must be \"blocking\" or \"empty\"")),
        };
        let rules = match doc.get("rule") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    parse_rule(r).map_err(|message| RuleError::Rule {
                        rule: i + 1,
                        message,
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(header("`rule` must be an array of tables ([[rule]])")),
        };
        let reads = reads_of(&rules);
        Ok(RuleScorer {
            name: string("name")?,
            version: string("version")?,
            test_names,
            start_blocking,
            rules,
            reads,
        })
    }

    /// Scores an already parsed measurement.
    pub fn score_value(&self, msm: &Value) -> Result<Scores, String> {
        let mut scores = if self.start_blocking {
            init_scores()
        } else {
            Map::new()
        };
        for rule in &self.rules {
            for each in rule.substitutions() {
                if !eval(&subst_cond(&rule.when, each), msm)? {
                    continue;
                }
                if let Some(f) = &rule.fail {
                    return Err(f.clone());
                }
                for (key, e) in &rule.set {
                    let key: Vec<String> = key
                        .iter()
                        .map(|k| each.map_or(k.clone(), |s| k.replace("{}", s)))
                        .collect();
                    let v = value(&subst_expr(e, each), msm)?;
                    assign(&mut scores, &key, v)?;
                }
                for (key, e) in &rule.add {
                    let key = each.map_or(key.clone(), |s| key.replace("{}", s));
                    let inc = value(&subst_expr(e, each), msm)?;
                    let cur = scores.get(&key).cloned().unwrap_or(Value::from(0));
                    scores.insert(
                        key.clone(),
                        add(&cur, &inc).ok_or(format!("cannot add {inc} to {cur} ({key})"))?,
                    );
                }
                if rule.stop {
                    return Ok(scores);
                }
            }
        }
        Ok(scores)
    }
}

/// Every path the rules look at, and how much of its value they need: a test that
/// only sees truthiness, type, size, presence or equality with a scalar or an empty
/// container needs the value's shape; anything copied into the scores or compared
/// with a non-empty container needs the whole value.
fn reads_of(rules: &[Rule]) -> Reads {
    fn join(prefix: &[String], path: &Path) -> Vec<String> {
        prefix.iter().chain(&path.0).cloned().collect()
    }
    fn flat(v: &Value) -> bool {
        match v {
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => true,
        }
    }
    fn cond(c: &Cond, prefix: &[String], out: &mut Vec<(Vec<String>, Read)>) {
        match c {
            Cond::Always => {}
            Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| cond(c, prefix, out)),
            Cond::Not(b) => cond(b, prefix, out),
            Cond::Missing(p) => out.push((join(prefix, p), Read::Shape)),
            Cond::Items { path, cond: c, .. } => {
                let at = join(prefix, path);
                out.push((at.clone(), Read::Shape));
                cond(c, &at, out);
            }
            Cond::Check(src, test) => {
                let shape = match test {
                    Test::Eq(x) | Test::Ne(x) | Test::Is(x) => flat(x),
                    Test::In(xs) | Test::NotIn(xs) => xs.iter().all(flat),
                    Test::Truthy(_)
                    | Test::IsNull(_)
                    | Test::Present(_)
                    | Test::StartsWith(_)
                    | Test::Contains(_)
                    | Test::Cmp(..) => true,
                };
                let how = if shape { Read::Shape } else { Read::Whole };
                out.push((join(prefix, &src.path), how));
            }
        }
    }
    fn expr(e: &Expr, out: &mut Vec<(Vec<String>, Read)>) {
        match e {
            Expr::Literal(_) => {}
            Expr::From(src) => out.push((src.path.0.clone(), Read::Whole)),
            Expr::Object(items) => items.iter().for_each(|(_, e)| expr(e, out)),
        }
    }
    let mut out = Vec::new();
    for rule in rules {
        for each in rule.substitutions() {
            cond(&subst_cond(&rule.when, each), &[], &mut out);
            let exprs = rule.set.iter().map(|(_, e)| e);
            for e in exprs.chain(rule.add.iter().map(|(_, e)| e)) {
                expr(&subst_expr(e, each), &mut out);
            }
        }
    }
    Reads::from_keys(&out)
}

fn subst_src(s: &Source, each: Option<&str>) -> Source {
    match each {
        None => s.clone(),
        Some(e) => Source {
            path: s.path.subst(e),
            ..s.clone()
        },
    }
}

fn subst_cond(c: &Cond, each: Option<&str>) -> Cond {
    if each.is_none() {
        return c.clone();
    }
    match c {
        Cond::Always => Cond::Always,
        Cond::Check(s, t) => Cond::Check(subst_src(s, each), t.clone()),
        Cond::Missing(p) => Cond::Missing(each.map_or(p.clone(), |e| p.subst(e))),
        Cond::All(v) => Cond::All(v.iter().map(|c| subst_cond(c, each)).collect()),
        Cond::Any(v) => Cond::Any(v.iter().map(|c| subst_cond(c, each)).collect()),
        Cond::Not(b) => Cond::Not(Box::new(subst_cond(b, each))),
        Cond::Items {
            path,
            quantifier,
            cond,
        } => Cond::Items {
            path: each.map_or(path.clone(), |e| path.subst(e)),
            quantifier: quantifier.clone(),
            cond: cond.clone(),
        },
    }
}

fn subst_expr(e: &Expr, each: Option<&str>) -> Expr {
    match (e, each) {
        (Expr::From(s), Some(_)) => Expr::From(subst_src(s, each)),
        (Expr::Object(items), Some(_)) => Expr::Object(
            items
                .iter()
                .map(|(k, v)| (k.clone(), subst_expr(v, each)))
                .collect(),
        ),
        _ => e.clone(),
    }
}

fn add(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(Value::from(i.checked_add(j)?)),
            _ => Some(Value::from(x.as_f64()? + y.as_f64()?)),
        },
        _ => None,
    }
}

fn assign(scores: &mut Scores, key: &[String], v: Value) -> Result<(), String> {
    let (last, parents) = key.split_last().ok_or("empty key")?;
    let mut cur = scores;
    for p in parents {
        let slot = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = slot
            .as_object_mut()
            .ok_or(format!("scores.{p} is not an object"))?;
    }
    cur.insert(last.clone(), v);
    Ok(())
}

fn value(e: &Expr, msm: &Value) -> Result<Value, String> {
    Ok(match e {
        Expr::Literal(v) => v.clone(),
        Expr::From(s) => s.read(msm)?.cloned().unwrap_or(Value::Null),
        Expr::Object(items) => {
            let mut m = Map::new();
            for (k, v) in items {
                m.insert(k.clone(), value(v, msm)?);
            }
            Value::Object(m)
        }
    })
}

fn cmp(op: &str, x: f64, y: f64) -> bool {
    match op {
        "gt" => x > y,
        "ge" => x >= y,
        "lt" => x < y,
        "le" => x <= y,
        _ => x == y,
    }
}

fn eval(c: &Cond, root: &Value) -> Result<bool, String> {
    Ok(match c {
        Cond::Always => true,
        Cond::All(v) => {
            for c in v {
                if !eval(c, root)? {
                    return Ok(false);
                }
            }
            true
        }
        Cond::Any(v) => {
            for c in v {
                if eval(c, root)? {
                    return Ok(true);
                }
            }
            false
        }
        Cond::Not(b) => !eval(b, root)?,
        Cond::Missing(p) => matches!(lookup(root, p)?, Lookup::Missing),
        Cond::Items {
            path,
            quantifier,
            cond,
        } => {
            let items: &[Value] = match lookup(root, path)? {
                Lookup::Missing | Lookup::Found(Value::Null) => &[],
                Lookup::Found(Value::Array(a)) => a,
                // Python loops over an empty dict without complaint, as the SDK does.
                Lookup::Found(Value::Object(o)) if o.is_empty() => &[],
                Lookup::Found(other) => {
                    return Err(format!(
                        "{} is a {}, not a list",
                        path.0.join("."),
                        kind(other)
                    ))
                }
            };
            let mut n = 0usize;
            for it in items {
                if eval(cond, it)? {
                    n += 1;
                }
            }
            match quantifier {
                Quantifier::Any => n > 0,
                Quantifier::All => n == items.len(),
                Quantifier::Count(op, k) => cmp(op, n as f64, *k),
            }
        }
        Cond::Check(src, test) => {
            let v = src.read(root)?;
            let null = Value::Null;
            let v = v.unwrap_or(&null);
            match test {
                Test::Truthy(want) => truthy(v) == *want,
                Test::IsNull(want) => v.is_null() == *want,
                Test::Present(want) => v.is_null() != *want,
                Test::Eq(x) => py_eq(v, x),
                Test::Ne(x) => !py_eq(v, x),
                Test::In(xs) => xs.iter().any(|x| py_eq(v, x)),
                Test::NotIn(xs) => !xs.iter().any(|x| py_eq(v, x)),
                // Python `is`: identity of singletons, so `true` is not `1`.
                Test::Is(x) => v == x,
                Test::StartsWith(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
                Test::Contains(p) => match v {
                    Value::String(s) => s.contains(p.as_str()),
                    Value::Array(a) => a.iter().any(|x| x.as_str() == Some(p.as_str())),
                    _ => false,
                },
                Test::Cmp(op, k) => v.as_f64().is_some_and(|x| cmp(op, x, *k)),
            }
        }
    })
}

impl Scorer for RuleScorer {
    fn info(&self) -> ScorerInfo {
        ScorerInfo {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    fn score(&self, msm: &Measurement<'_>) -> Result<Scores, ScoreError> {
        // Cut down to what the rules read, a fraction of the measurement's bytes to
        // parse; a text that cannot be cut is parsed whole so its error is serde's.
        let text = match msm.cut_for(&self.reads, false) {
            Some(text) => Some(std::borrow::Cow::Borrowed(text)),
            None => self.reads.project(msm.json.as_bytes()).ok().map(Into::into),
        };
        let cut = text.and_then(|t| serde_json::from_slice::<Value>(&t).ok());
        match cut {
            Some(v) => self.score_value(&v),
            None => self.score_value(msm.value().map_err(ScoreError)?),
        }
        .map_err(ScoreError)
    }

    fn cut_plan(&self) -> Option<crate::scores::CutPlan<'_>> {
        Some(crate::scores::CutPlan {
            reads: &self.reads,
            bodies: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A rule file of test `t` with these rules.
    fn parse(rules: &str) -> Result<RuleScorer, RuleError> {
        RuleScorer::parse(&format!(
            "name = \"t\"\nversion = \"1\"\ntest_names = [\"t\"]\n{rules}"
        ))
    }

    fn run(rules: &str, msm: Value) -> Result<Value, String> {
        let s = parse(rules).map_err(|e| e.to_string())?;
        s.score_value(&msm).map(Value::Object)
    }

    /// Scores `msm` whole and through `Scorer::score` (cut down to the rules' reads);
    /// they must agree. Returns the scores and the cut text.
    fn whole_and_cut(rules: &str, msm: &Value) -> (Result<Value, String>, String) {
        let s = parse(rules).unwrap();
        let json = msm.to_string();
        let whole = s.score_value(msm).map(Value::Object);
        let cut = Scorer::score(&s, &Measurement::new(&json, Default::default()))
            .map(Value::Object)
            .map_err(|e| e.0);
        assert_eq!(whole, cut, "rules {rules} on {msm}");
        let cut = s.reads.project(json.as_bytes()).unwrap();
        (whole, String::from_utf8(cut).unwrap())
    }

    #[test]
    fn measurements_are_cut_to_what_the_rules_read() {
        let rules = r#"
[[rule]]
when = { path = "test_keys", eq = {} }
set = { accuracy = 0.0 }
stop = true
[[rule]]
when = { any = [
  { path = "test_keys.failure", in = ["eof_error", []] },
  { path = "test_keys.failure", contains = "ssl_error" },
  { path = "test_keys.tags", contains = "x" },
  { path = "test_keys.pair", eq = [1, 2] },
  { path = "test_keys.obj", eq = { k = 1 } },
  { missing = "test_keys.gone" },
  { count_items = "test_keys.hops", where = { path = "rtt", gt = 5 }, ge = 2 },
] }
set = { blocking_general = 1.0, "extra.pair" = { from = "test_keys.pair" } }
stop = true
[[rule]]
each = ["a", "b"]
when = { truthy = "test_keys.{}_ok" }
add = { blocking_general = 0.5 }
"#;
        let big = "y".repeat(10_000);
        let base = json!({"test_keys": {"failure": null, "tags": ["a", {"x": 1}], "pair": [1, 3],
            "gone": 0, "hops": [{"rtt": 9, "pad": big}, {"rtt": 1}], "a_ok": true,
            "b_ok": {"deep": big}, "unread": {"big": big}}, "network_events": [big]});
        let variants = [
            json!({"test_keys": {}}),
            json!({"test_keys": {"unread": 1}}),
            json!({"test_keys": []}),
            json!({"test_keys": "s"}),
            json!({}),
            base.clone(),
            json!({"test_keys": {"failure": "ssl_error: x"}}),
            json!({"test_keys": {"failure": []}}),
            json!({"test_keys": {"failure": ["eof_error"]}}),
            json!({"test_keys": {"tags": ["x"]}, "gone": 1}),
            json!({"test_keys": {"pair": [1, 2], "gone": 1}}),
            json!({"test_keys": {"pair": {"1": 2}, "gone": 1}}),
            json!({"test_keys": {"gone": 1, "hops": [{"rtt": 6}, {"rtt": 7.5}]}}),
            json!({"test_keys": {"gone": 1, "hops": [{"rtt": 6}, 3]}}),
            json!({"test_keys": {"gone": 1, "hops": {"rtt": 6}}}),
            json!({"test_keys": {"gone": 1, "a_ok": [0], "b_ok": {}}}),
            json!({"test_keys": {"gone": 1, "obj": {"k": 1}}}),
        ];
        for msm in &variants {
            let _ = whole_and_cut(rules, msm);
        }
        let (scores, cut) = whole_and_cut(rules, &base);
        assert_eq!(scores.unwrap()["blocking_general"], json!(1.0));
        // Keys stay, values nobody reads do not travel; what is copied does.
        assert!(cut.len() < 400, "{cut}");
        assert!(cut.contains(r#""unread":null"#) && cut.contains(r#""network_events":null"#));
        assert!(cut.contains(r#""pair":[1,3]"#) && cut.contains(r#""tags":["a",{"x":null}]"#));
        assert!(cut.contains(r#""b_ok":{"deep":null}"#), "{cut}");
    }

    #[test]
    fn set_add_stop_and_key_order() {
        let r = r#"
[[rule]]
set = { extra = { endpoint = { from = "test_keys.endpoint" } } }
[[rule]]
when = { truthy = "test_keys.failure" }
set = { blocking_general = 1.0, "extra.failure" = { from = "test_keys.failure" } }
stop = true
[[rule]]
add = { blocking_general = 0.5 }
"#;
        let s = run(r, json!({"test_keys": {"failure": "x", "endpoint": "e"}})).unwrap();
        assert_eq!(
            crate::ujson::dumps(&s),
            r#"{"blocking_general":1.0,"blocking_global":0.0,"blocking_country":0.0,"blocking_isp":0.0,"blocking_local":0.0,"extra":{"endpoint":"e","failure":"x"}}"#
        );
        let s = run(r, json!({"test_keys": null})).unwrap();
        assert_eq!(s["blocking_general"], json!(0.5));
        assert_eq!(s["extra"], json!({"endpoint": null}));
    }

    #[test]
    fn getter_semantics() {
        let r = r#"
start = "empty"
[[rule]]
when = { path = "test_keys.bt", missing_as = 0, eq = 0 }
set = { zero = true }
[[rule]]
when = { path = "test_keys.r", or = "", not_in = ["ok", "error"] }
set = { accuracy = 0.0 }
[[rule]]
when = { missing = "resolver_ip" }
set = { no_resolver = true }
"#;
        assert_eq!(
            run(r, json!({"test_keys": {}})).unwrap(),
            json!({"zero": true, "accuracy": 0.0, "no_resolver": true})
        );
        assert_eq!(
            run(
                r,
                json!({"test_keys": {"bt": null, "r": "ok"}, "resolver_ip": null})
            )
            .unwrap(),
            json!({})
        );
        assert_eq!(
            run(r, json!({"test_keys": {"bt": 0.0, "r": null}})).unwrap()["zero"],
            json!(true)
        );
    }

    #[test]
    fn identity_membership_items_and_each() {
        let r = r#"
[[rule]]
each = ["a", "b"]
when = { path = "test_keys.{}", is = false }
set = { "{}" = false }
add = { blocking_general = 0.5 }
[[rule]]
when = { any_item = "test_keys.requests", where = { path = "failure", contains = "ssl_error" } }
set = { ssl = true }
[[rule]]
when = { count_items = "test_keys.requests", where = { null = "failure" }, ge = 2 }
set = { two_ok = true }
[[rule]]
when = { all = [{ path = "software_name", starts_with = "ooniprobe-android" }, { not = { path = "software_version", in = ["1", "2"] } }] }
fail = "old probe"
"#;
        let s = run(r, json!({"test_keys": {"a": false, "b": 0, "requests": [{"failure": null}, {"failure": "ssl_error: x"}, {}]}})).unwrap();
        assert_eq!(s["a"], json!(false));
        assert!(s.get("b").is_none(), "0 is not False by identity");
        assert_eq!(s["blocking_general"], json!(0.5));
        assert_eq!(s["ssl"], json!(true));
        assert_eq!(s["two_ok"], json!(true));
        let e = run(
            r,
            json!({"software_name": "ooniprobe-android-x", "software_version": "3"}),
        )
        .unwrap_err();
        assert_eq!(e, "old probe");
    }

    #[test]
    fn stray_keys_in_a_condition_are_refused() {
        for bad in [
            "when = { truthy = \"a\", or = 1 }",
            "when = { path = \"a\", eq = 1, ne = 2 }",
            "when = { all = [], truthy = \"a\" }",
            "when = { path = \"a\", eq = 1, where = { truthy = \"b\" } }",
        ] {
            let e = run(&format!("[[rule]]\n{bad}\nset = {{ x = 1 }}\n"), json!({})).unwrap_err();
            assert!(e.starts_with("rule 1:"), "{bad}: {e}");
        }
        let empty_dict =
            "[[rule]]\nwhen = { any_item = \"l\", where = { truthy = \"x\" } }\nset = { x = 1 }\n";
        assert_eq!(run(empty_dict, json!({"l": {}})).unwrap().get("x"), None);
        let null_item =
            "[[rule]]\nwhen = { any_item = \"l\", where = { truthy = \"x\" } }\nset = { x = 1 }\n";
        assert!(run(null_item, json!({"l": [5]}))
            .unwrap_err()
            .contains("the value is a number"));
    }

    #[test]
    fn errors_name_the_rule_and_the_problem() {
        let e = run("[[rule]]\nwhen = { path = \"x\" }\n", json!({})).unwrap_err();
        assert!(
            e.starts_with("rule 1:") && e.contains("needs one of"),
            "{e}"
        );
        let e = run("[[rule]]\nwhenn = { truthy = \"x\" }\n", json!({})).unwrap_err();
        assert!(e.contains("whenn"), "{e}");
        assert!(run("abi = 2\n", json!({})).unwrap_err().contains("abi = 2"));
        assert!(RuleScorer::parse("name = \"x\"\nversion = \"1\"\ntest_names = []\n").is_err());
        assert!(RuleScorer::parse("name = \n").is_err());
        // stepping into a non-object fails the measurement, as Python raises
        let r = "[[rule]]\nwhen = { truthy = \"test_keys.a\" }\nset = { x = 1 }\n";
        assert!(run(r, json!({"test_keys": [1]})).is_err());
    }
}
