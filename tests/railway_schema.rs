//! Every GraphQL operation ops sends to Railway, validated against Railway's own published schema
//! (railwayapp/cli, src/gql/schema.json; a trimmed, pinned copy in tests/fixtures, refreshed by
//! scripts/railway-schema.py). The fake Railway agrees with whoever wrote it; this does not.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use trigger_ops::clients::railway;

const SCHEMA: &str = include_str!("fixtures/railway-schema.json");

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Punct(char),
    Str(String),
    Int(String),
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '-' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Tok::Int(chars[start..i].iter().collect()));
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            out.push(Tok::Str(chars[start..i].iter().collect()));
            i += 1;
        } else if "{}():!$[]=".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

/// A type reference in the introspection shape: `{kind: NON_NULL|LIST, ofType}` or `{name}`.
type TypeRef = Value;

#[derive(Debug)]
enum Arg {
    Var(String),
    Literal,
}

#[derive(Debug)]
struct Field {
    name: String,
    args: Vec<(String, Arg)>,
    selection: Option<Vec<Field>>,
}

#[derive(Debug)]
struct Operation {
    kind: String,
    vars: BTreeMap<String, TypeRef>,
    selection: Vec<Field>,
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn next(&mut self) -> Result<Tok, String> {
        let t = self.toks.get(self.at).cloned().ok_or("unexpected end")?;
        self.at += 1;
        Ok(t)
    }
    fn punct(&mut self, c: char) -> Result<(), String> {
        match self.next()? {
            Tok::Punct(p) if p == c => Ok(()),
            t => Err(format!("expected {c:?}, found {t:?}")),
        }
    }
    fn is(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }
    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Name(n) => Ok(n),
            t => Err(format!("expected a name, found {t:?}")),
        }
    }
    fn ty(&mut self) -> Result<TypeRef, String> {
        let inner = if self.is('[') {
            self.punct('[')?;
            let of = self.ty()?;
            self.punct(']')?;
            json!({"kind": "LIST", "ofType": of})
        } else {
            json!({"name": self.name()?})
        };
        if self.is('!') {
            self.punct('!')?;
            return Ok(json!({"kind": "NON_NULL", "ofType": inner}));
        }
        Ok(inner)
    }
    fn operation(&mut self) -> Result<Operation, String> {
        let kind = self.name()?;
        if kind != "query" && kind != "mutation" {
            return Err(format!("{kind} is not an operation type"));
        }
        if matches!(self.peek(), Some(Tok::Name(_))) {
            self.name()?;
        }
        let mut vars = BTreeMap::new();
        if self.is('(') {
            self.punct('(')?;
            while !self.is(')') {
                self.punct('$')?;
                let name = self.name()?;
                self.punct(':')?;
                vars.insert(name, self.ty()?);
            }
            self.punct(')')?;
        }
        let selection = self.selection()?;
        if self.at != self.toks.len() {
            return Err("text after the operation".into());
        }
        Ok(Operation {
            kind,
            vars,
            selection,
        })
    }
    fn selection(&mut self) -> Result<Vec<Field>, String> {
        self.punct('{')?;
        let mut fields = Vec::new();
        while !self.is('}') {
            let name = self.name()?;
            let mut args = Vec::new();
            if self.is('(') {
                self.punct('(')?;
                while !self.is(')') {
                    let arg = self.name()?;
                    self.punct(':')?;
                    let value = match self.next()? {
                        Tok::Punct('$') => Arg::Var(self.name()?),
                        Tok::Str(_) | Tok::Int(_) | Tok::Name(_) => Arg::Literal,
                        t => return Err(format!("unexpected {t:?} as a value")),
                    };
                    args.push((arg, value));
                }
                self.punct(')')?;
            }
            let selection = if self.is('{') {
                Some(self.selection()?)
            } else {
                None
            };
            fields.push(Field {
                name,
                args,
                selection,
            });
        }
        self.punct('}')?;
        Ok(fields)
    }
}

struct Schema {
    types: BTreeMap<String, Value>,
    query: String,
    mutation: String,
}

impl Schema {
    fn load() -> Schema {
        let doc: Value = serde_json::from_str(SCHEMA).expect("the schema fixture is JSON");
        let s = &doc["__schema"];
        Schema {
            types: s["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
                .collect(),
            query: s["queryType"]["name"].as_str().unwrap().to_string(),
            mutation: s["mutationType"]["name"].as_str().unwrap().to_string(),
        }
    }
}

fn named(t: &TypeRef) -> &str {
    match t.get("ofType").filter(|o| !o.is_null()) {
        Some(of) => named(of),
        None => t["name"].as_str().unwrap_or_default(),
    }
}

fn is_kind(t: &TypeRef, kind: &str) -> bool {
    t["kind"].as_str() == Some(kind)
}

/// Whether a variable of type `var` may be passed where `arg` is expected (GraphQL's
/// "are types compatible" with the non-null relaxation).
fn compatible(var: &TypeRef, arg: &TypeRef) -> bool {
    if is_kind(arg, "NON_NULL") {
        return is_kind(var, "NON_NULL") && compatible(&var["ofType"], &arg["ofType"]);
    }
    if is_kind(var, "NON_NULL") {
        return compatible(&var["ofType"], arg);
    }
    if is_kind(arg, "LIST") {
        return is_kind(var, "LIST") && compatible(&var["ofType"], &arg["ofType"]);
    }
    !is_kind(var, "LIST") && var["name"] == arg["name"]
}

fn render(t: &TypeRef) -> String {
    if is_kind(t, "NON_NULL") {
        format!("{}!", render(&t["ofType"]))
    } else if is_kind(t, "LIST") {
        format!("[{}]", render(&t["ofType"]))
    } else {
        t["name"].as_str().unwrap_or("?").to_string()
    }
}

fn validate(text: &str) -> Result<(), String> {
    let schema = Schema::load();
    let op = Parser {
        toks: lex(text)?,
        at: 0,
    }
    .operation()?;
    for (name, t) in &op.vars {
        let kind = schema
            .types
            .get(named(t))
            .map(|t| t["kind"].as_str().unwrap_or_default().to_string())
            .ok_or_else(|| format!("${name}: type {} does not exist", named(t)))?;
        if !["SCALAR", "ENUM", "INPUT_OBJECT"].contains(&kind.as_str()) {
            return Err(format!("${name}: {} is not an input type", named(t)));
        }
    }
    let root = if op.kind == "query" {
        &schema.query
    } else {
        &schema.mutation
    };
    let mut used = BTreeSet::new();
    check(&schema, root, &op.selection, &op.vars, &mut used)?;
    for name in op.vars.keys() {
        if !used.contains(name) {
            return Err(format!("${name} is declared but never used"));
        }
    }
    Ok(())
}

fn check(
    schema: &Schema,
    parent: &str,
    fields: &[Field],
    vars: &BTreeMap<String, TypeRef>,
    used: &mut BTreeSet<String>,
) -> Result<(), String> {
    let ty = &schema.types[parent];
    for f in fields {
        let def = ty["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["name"] == f.name.as_str())
            .ok_or_else(|| format!("{parent}.{} does not exist", f.name))?;
        let params = def["args"].as_array().cloned().unwrap_or_default();
        for (arg, value) in &f.args {
            let p = params
                .iter()
                .find(|p| p["name"] == arg.as_str())
                .ok_or_else(|| format!("{parent}.{} has no argument {arg}", f.name))?;
            if let Arg::Var(v) = value {
                let vt = vars
                    .get(v)
                    .ok_or_else(|| format!("${v} is used but not declared"))?;
                if !compatible(vt, &p["type"]) {
                    return Err(format!(
                        "{parent}.{}({arg}:) expects {}, ${v} is {}",
                        f.name,
                        render(&p["type"]),
                        render(vt)
                    ));
                }
                used.insert(v.clone());
            }
        }
        for p in &params {
            let given = f.args.iter().any(|(a, _)| p["name"] == a.as_str());
            if is_kind(&p["type"], "NON_NULL") && p.get("defaultValue").is_none() && !given {
                return Err(format!(
                    "{parent}.{} needs argument {}",
                    f.name,
                    p["name"].as_str().unwrap_or("?")
                ));
            }
        }
        let result = named(&def["type"]);
        let kind = schema
            .types
            .get(result)
            .map(|t| t["kind"].as_str().unwrap_or(""));
        match (kind, &f.selection) {
            (Some("OBJECT" | "INTERFACE" | "UNION"), Some(sel)) => {
                check(schema, result, sel, vars, used)?
            }
            (Some("OBJECT" | "INTERFACE" | "UNION"), None) => {
                return Err(format!(
                    "{parent}.{} is an object: select its fields",
                    f.name
                ))
            }
            (Some("SCALAR" | "ENUM"), None) => {}
            (Some(_), Some(_)) => {
                return Err(format!("{parent}.{} is a leaf: it has no fields", f.name))
            }
            (k, _) => {
                return Err(format!(
                    "{parent}.{}: unknown type {result} ({k:?})",
                    f.name
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn every_query_ops_sends_is_valid_against_railways_published_schema() {
    let all = [
        ("PROJECT", railway::PROJECT),
        ("WEBAPP", railway::WEBAPP),
        ("DOMAINS", railway::DOMAINS),
        ("DEPLOYMENTS", railway::DEPLOYMENTS),
        ("DEPLOYMENT", railway::DEPLOYMENT),
        ("DEPLOYMENT_LOGS", railway::DEPLOYMENT_LOGS),
        ("ENVIRONMENT_LOGS", railway::ENVIRONMENT_LOGS),
        ("ME", railway::ME),
        ("PROJECT_TOKEN", railway::PROJECT_TOKEN),
        ("DEPLOYMENT_RESTART", railway::DEPLOYMENT_RESTART),
    ];
    // Every query constant of the client is listed here (the fixture script reads them too).
    let source = include_str!("../src/clients/railway.rs");
    assert_eq!(
        source.matches("pub const ").count(),
        all.len(),
        "a query was added to src/clients/railway.rs: list it here and rerun scripts/railway-schema.py"
    );
    for (name, query) in all {
        if let Err(e) = validate(query) {
            panic!("railway::{name} does not validate against Railway's schema: {e}");
        }
    }
    let doc: Value = serde_json::from_str(SCHEMA).unwrap();
    assert!(doc["source"]
        .as_str()
        .unwrap()
        .starts_with("railwayapp/cli src/gql/schema.json at "));
}

#[test]
fn the_validator_rejects_what_railway_would_reject() {
    let cases = [
        (
            "query A($e: String!, $s: String!) { serviceInstance(environmentId: $e, serviceId: $s) { source { image tag } } }",
            "ServiceSource.tag does not exist",
        ),
        (
            "query A($e: String!) { serviceInstance(environmentId: $e) { source { image } } }",
            "needs argument serviceId",
        ),
        (
            "query A($e: String!, $s: String) { serviceInstance(environmentId: $e, serviceId: $s) { source { image } } }",
            "expects String!, $s is String",
        ),
        (
            "query A($e: String!, $s: String!) { serviceInstance(environmentId: $e, serviceId: $s) }",
            "is an object",
        ),
        (
            "query A($e: String!, $s: String!) { serviceInstance(environmentId: $e, serviceId: $s) { latestDeployment { meta { branch } } } }",
            "is a leaf",
        ),
        (
            "query A($e: String!, $s: String!, $x: Int) { serviceInstance(environmentId: $e, serviceId: $s) { source { image } } }",
            "$x is declared but never used",
        ),
        ("query A { nope }", "Query.nope does not exist"),
    ];
    for (query, expected) in cases {
        match validate(query) {
            Ok(()) => panic!("accepted: {query}"),
            Err(e) => assert!(e.contains(expected), "{query}: {e}"),
        }
    }
}
