//! Differential tests of devstack's Go template language (confd resources'
//! `templates/*.tmpl`) against Go's own `text/template`: the same templates
//! and data through both, the same output, and an error from one only when
//! the other errs too. Go's side is fixtures/gotemplate/main.go, run with
//! Debian's `golang-go` (installed by .ci/run); no Go is a failure.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use devstack::router::gotemplate::{from_json, render, Store};
use serde_json::{json, Value as Json};

fn data() -> Json {
    json!({
        "name": "bob",
        "empty": "",
        "t": true,
        "f": false,
        "n": 3,
        "x": 2.5,
        "list": ["a", "b", "c"],
        "none": [],
        "map": {"k": "v", "a": "1", "z": "26"},
        "obj": {"inner": {"v": "deep"}, "items": [{"name": "p", "port": "80"}, {"name": "q", "port": "81"}]},
    })
}

/// (what it covers, template).
const CASES: &[(&str, &str)] = &[
    // Pipelines.
    ("pipe into printf", r#"{{.name | printf "%s-%s" "x"}}"#),
    ("pipe into len", r#"{{"abcd" | len}} {{.list | len}}"#),
    ("chained pipes", r#"{{.name | printf "%q" | printf "<%s>"}}"#),
    ("parenthesised", r#"{{printf "%s/%s" (index .list 0) (index .map "k")}}"#),
    ("print and println", r#"{{print 1 2 "a" "b" 3}}|{{println "a" 1 true}}"#),
    ("printf verbs", r#"{{printf "%v %d %.2f %5s|%-4s|" .x 7 .x "r" "l"}}"#),
    ("nested fields", r#"{{.obj.inner.v}} {{with .obj}}{{.inner.v}}{{end}}"#),
    ("missing key", r#"[{{.nothing}}] [{{.obj.nothing}}]"#),
    // range / else / break / continue.
    ("range list", r#"{{range .list}}[{{.}}]{{end}}"#),
    ("range empty else", r#"{{range .none}}x{{else}}empty{{end}}"#),
    ("range index", r#"{{range $i, $e := .list}}{{$i}}={{$e}} {{end}}"#),
    ("range map sorted", r#"{{range $k, $v := .map}}{{$k}}:{{$v}};{{end}}"#),
    ("range objects", r#"{{range .obj.items}}server {{.name}} :{{.port}}
{{end}}"#),
    ("range break continue", r#"{{range .list}}{{if eq . "b"}}{{continue}}{{end}}{{.}}{{if eq . "c"}}{{break}}{{end}}{{end}}"#),
    ("range root", r#"{{range .list}}{{$.name}}{{.}} {{end}}"#),
    // with.
    ("with value", r#"{{with .name}}hi {{.}}{{end}}"#),
    ("with else", r#"{{with .empty}}x{{else}}nothing{{end}} {{with .nothing}}x{{else}}none{{end}}"#),
    ("with variable", r#"{{with $v := .obj.inner}}{{$v.v}}{{end}}"#),
    // if.
    ("if else if", r#"{{if .nothing}}a{{else if .f}}b{{else if .t}}c{{else}}d{{end}}"#),
    ("if truthiness", r#"{{if .none}}1{{end}}{{if .list}}2{{end}}{{if 0}}3{{end}}{{if .map}}4{{end}}{{if ""}}5{{end}}"#),
    // Variables.
    ("variables", r#"{{$x := "one"}}{{$x}} {{$y := .list}}{{index $y 2}}"#),
    ("assignment", r#"{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}"#),
    ("variable scope", r#"{{$x := "out"}}{{range .list}}{{$x := .}}{{end}}{{$x}}"#),
    // and / or / not.
    ("and or", r#"{{and 1 0 "x"}} {{and 1 "y"}} {{or 0 "" "z"}} {{or 0 ""}} {{or .nothing "default"}}"#),
    ("not", r#"{{not .t}} {{not .f}} {{not ""}} {{not .list}}"#),
    ("and or in if", r#"{{if and .t (not .f)}}yes{{end}} {{if or .f .empty}}no{{else}}neither{{end}}"#),
    // Comparisons.
    ("eq ne", r#"{{eq .name "bob"}} {{eq 1 2 1}} {{ne "a" "b"}} {{eq .t true}}"#),
    ("lt le gt ge", r#"{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 3}} {{lt .x 3.0}} {{gt .n 2.0}}"#),
    ("comparison of kinds", r#"{{lt 1 "a"}}"#),
    // Whitespace trimming.
    ("trim both", "a  {{- 1 -}}  b"),
    ("trim lines", "{{- range .list}}\n  {{.}}\n{{- end}}\n"),
    ("trim comment", "x\n  {{- /* a comment */ -}}\n  y"),
    ("no trim without space", "{{3 -}}  z {{-4}}"),
    ("a config block", "backend web\n{{- range $i, $s := .obj.items}}\n    server {{$s.name}}-{{$i}} 10.0.0.{{$i}}:{{$s.port}}\n{{- end}}\n\n"),
    // index, slice, len, escapes.
    ("index", r#"{{index .list 1}} {{index .map "z"}} {{index .obj.items 1 | printf "%v"}}"#),
    ("slice", r#"{{slice "abcdef" 1 3}} {{slice .list 1}}"#),
    ("index out of range", r#"{{index .list 10}}"#),
    ("escapers", r#"{{html "<a&b>"}} {{js "it's"}} {{urlquery "a b&c"}}"#),
    // Literals.
    ("literals", r#"{{`raw {{x}}`}} {{'a'}} {{0x10}} {{1e3}} {{-2}} {{1.5}} {{true}} {{nil | printf "%v"}}"#),
    // Templates.
    ("define and template", r#"{{define "T"}}<{{.}}>{{end}}{{template "T" .name}}{{template "T" "x"}}"#),
    ("block", r#"{{block "B" .list}}{{len .}}{{end}}"#),
    ("undefined template", r#"{{template "nope"}}"#),
    // Errors at parse time.
    ("unclosed action", r#"{{.name"#),
    ("unknown function", r#"{{nosuch 1}}"#),
    ("end without start", r#"{{end}}"#),
    ("end outside a block, text after", "a\n{{if .t}}b{{end}}\n{{end}}\nc"),
    ("else outside a block", r#"a{{else}}b"#),
    ("undefined variable", r#"{{$nope}}"#),
];

/// Go's results for every case, from fixtures/gotemplate/main.go.
fn go_results(cases: &Json) -> Vec<(String, String)> {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gotemplate/main.go");
    let mut child = Command::new("go")
        .arg("run")
        .arg(&program)
        .env("GO111MODULE", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `go` (Debian's golang-go; .ci/run installs it): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cases.to_string().as_bytes())
        .expect("cases to go");
    let out = child.wait_with_output().expect("go runs");
    assert!(
        out.status.success(),
        "go run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Json> = serde_json::from_slice(&out.stdout).expect("go's JSON");
    results
        .into_iter()
        .map(|r| {
            (
                r["output"].as_str().unwrap_or_default().to_string(),
                r["error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_template_language_matches_go() {
    let data = data();
    let cases = Json::Array(
        CASES
            .iter()
            .map(|(_, t)| json!({"template": t, "data": data}))
            .collect(),
    );
    let go = go_results(&cases);
    assert_eq!(go.len(), CASES.len());
    let dot = from_json(data.clone());
    let mut differences = Vec::new();
    let mut errors = 0;
    for ((what, template), (go_out, go_err)) in CASES.iter().zip(&go) {
        let ours = render("t", template, &Store::default(), &dot);
        match (ours, go_err.is_empty()) {
            (Ok(out), true) if &out == go_out => {}
            (Err(_), false) => errors += 1,
            (ours, _) => differences.push(format!(
                "{what}: {template:?}\n  go:   {}\n  ours: {ours:?}",
                if go_err.is_empty() {
                    format!("{go_out:?}")
                } else {
                    format!("error {go_err}")
                }
            )),
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} cases differ from Go's text/template:\n{}",
        differences.len(),
        CASES.len(),
        differences.join("\n")
    );
    // The error cases must have been errors on both sides, not skipped.
    assert!(errors >= 9, "only {errors} error cases errored in both");
}
