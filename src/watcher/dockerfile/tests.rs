//! The Dockerfile analysis: each test names a case that must take the full
//! build, or where a file lands when it need not.

use super::*;

fn file(path: &str) -> Changed {
    Changed {
        path: path.into(),
        state: State::File,
    }
}

fn plan_of(text: &str, changed: &[Changed]) -> Plan {
    let df = parse(text).expect("parses");
    plan(&df, "Dockerfile", None, changed)
}

fn placed(text: &str, changed: &[Changed]) -> Vec<Placement> {
    match plan_of(text, changed) {
        Plan::Overlay(p) => p,
        Plan::Build(why) => panic!("the full build: {why}"),
    }
}

fn full(text: &str, changed: &[Changed]) -> String {
    match plan_of(text, changed) {
        Plan::Build(why) => why,
        Plan::Overlay(p) => panic!("an overlay, not the full build: {p:?}"),
    }
}

const WEB: &str =
    "FROM base\nENV PORT=8080\nWORKDIR /app\nRUN pip install x\nCMD [\"python3\"]\nCOPY . /app/\n";

#[test]
fn a_file_copied_after_the_last_run_lands_under_the_destination() {
    let p = placed(WEB, &[file("sub/dir/a.py")]);
    assert_eq!(
        p,
        [Placement {
            file: "sub/dir/a.py".into(),
            dest: "/app/sub/dir/a.py".into(),
            parents: vec!["/app/sub".into(), "/app/sub/dir".into()],
            chown: None,
            line: 6,
        }]
    );
}

#[test]
fn a_copy_followed_by_a_run_takes_the_full_build() {
    let text = "FROM base\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY . .\n";
    let why = full(text, &[file("requirements.txt")]);
    assert!(why.contains("before a RUN"), "{why}");
    // The code copied after the RUN does not.
    let p = placed(text, &[file("app.py")]);
    assert_eq!(p[0].dest, "/app/app.py");
}

#[test]
fn continuations_comments_and_the_escape_directive_are_followed() {
    let text = "# syntax=docker/dockerfile:1\n# escape=`\nFROM base\nRUN apt-get update && `\n  # a comment inside\n\n  apt-get install -y x\nCOPY --chown=app:staff `\n   static/ `\n   /srv/static/\n";
    let df = parse(text).expect("parses");
    assert_eq!(df.steps.len(), 3, "{df:?}");
    assert_eq!(df.steps[1].kind, Kind::Run);
    let Kind::Copy(cp) = &df.steps[2].kind else {
        panic!("{df:?}");
    };
    assert_eq!(cp.chown.as_deref(), Some("app:staff"));
    assert_eq!(cp.sources, ["static/"]);
    assert_eq!(cp.dest, "/srv/static/");
    assert_eq!(df.steps[2].line, 8);
    let p = placed(text, &[file("static/css/site.css")]);
    assert_eq!(p[0].dest, "/srv/static/css/site.css");
    assert_eq!(p[0].chown.as_deref(), Some("app:staff"));
}

#[test]
fn backslash_continuations_and_the_json_form() {
    let text = "FROM base\nCOPY [\"a file.txt\", \\\n  \"/opt/\"]\n";
    let p = placed(text, &[file("a file.txt")]);
    assert_eq!(p[0].dest, "/opt/a file.txt");
}

#[test]
fn a_heredoc_takes_the_full_build() {
    let text = "FROM base\nRUN <<EOF\necho hi\nEOF\nCOPY . /app/\n";
    let why = full(text, &[file("a.py")]);
    assert!(why.contains("heredoc"), "{why}");
}

#[test]
fn a_variable_in_the_step_takes_the_full_build() {
    let text = "FROM base\nARG DIR=/app\nENV HOME_DIR=/srv\nCOPY . $DIR/\n";
    assert!(full(text, &[file("a.py")]).contains("variable"));
    let text = "FROM base\nARG WHO=1000\nCOPY --chown=${WHO} . /app/\n";
    assert!(full(text, &[file("a.py")]).contains("variable"));
    // A relative destination under a WORKDIR with a variable.
    let text = "FROM base\nARG DIR=/app\nWORKDIR $DIR\nCOPY . .\n";
    assert!(full(text, &[file("a.py")]).contains("WORKDIR"));
}

#[test]
fn chmod_and_unknown_flags_take_the_full_build() {
    let why = full("FROM base\nCOPY --chmod=600 . /app/\n", &[file("a.py")]);
    assert!(why.contains("--chmod=600"), "{why}");
    let why = full("FROM base\nCOPY --link . /app/\n", &[file("a.py")]);
    assert!(why.contains("--link"), "{why}");
}

#[test]
fn the_dockerfile_dockerignore_deleted_files_and_directories_take_the_full_build() {
    assert!(full(WEB, &[file("Dockerfile")]).contains("Dockerfile changed"));
    assert!(full(WEB, &[file("./.dockerignore")]).contains(".dockerignore"));
    let gone = Changed {
        path: "a.py".into(),
        state: State::Deleted,
    };
    assert!(full(WEB, &[gone]).contains("deleted"));
    let dir = Changed {
        path: "new".into(),
        state: State::Directory,
    };
    assert!(full(WEB, &[dir]).contains("directory"));
}

#[test]
fn an_ignored_file_is_not_placed() {
    let ignored = Changed {
        path: "secret.env".into(),
        state: State::Ignored,
    };
    let p = placed(WEB, &[ignored, file("a.py")]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].file, "a.py");
    // Nothing but ignored files: nothing reaches the image.
    let ignored = Changed {
        path: "secret.env".into(),
        state: State::Ignored,
    };
    assert!(full(WEB, &[ignored]).contains("no changed file"));
}

#[test]
fn multi_stage_builds_overlay_only_what_the_final_stage_copies() {
    let text = "FROM base AS build\nWORKDIR /src\nCOPY src/ ./src/\nRUN make\n\nFROM base\nCOPY --from=build /src/out /app/bin\nCOPY static/ /app/static/\n";
    let why = full(text, &[file("src/main.c")]);
    assert!(why.contains("another stage"), "{why}");
    let p = placed(text, &[file("static/index.html")]);
    assert_eq!(p[0].dest, "/app/static/index.html");
    // A COPY --from after the step, over the same tree, decides what is there.
    let text = "FROM base AS build\nRUN make\nFROM base\nCOPY static/ /app/\nCOPY --from=build /out /app/\n";
    let why = full(text, &[file("static/index.html")]);
    assert!(why.contains("write over"), "{why}");
    // The stage a target names is the final one.
    let text = "FROM base AS dev\nCOPY . /app/\nFROM base AS prod\nCOPY . /app/\nRUN compile\n";
    let df = parse(text).unwrap();
    assert!(matches!(
        plan(&df, "Dockerfile", Some("dev"), &[file("a.py")]),
        Plan::Build(why) if why.contains("another stage")
    ));
}

#[test]
fn add_of_an_archive_or_a_url_takes_the_full_build() {
    let tarball = Changed {
        path: "vendor.tar.gz".into(),
        state: State::Archive,
    };
    let why = full("FROM base\nADD vendor.tar.gz /opt/\n", &[tarball]);
    assert!(why.contains("unpacks"), "{why}");
    let why = full(
        "FROM base\nADD https://example.com/x.txt /opt/\nCOPY . /app/\n",
        &[file("a.py")],
    );
    assert!(why.contains("URL"), "{why}");
    // ADD of a plain file is a COPY.
    let p = placed("FROM base\nADD conf.ini /etc/app/\n", &[file("conf.ini")]);
    assert_eq!(p[0].dest, "/etc/app/conf.ini");
}

#[test]
fn files_named_and_wildcards_land_where_the_builder_puts_them() {
    let text = "FROM base\nWORKDIR /app\nCOPY config.toml settings.toml\n";
    assert_eq!(
        placed(text, &[file("config.toml")])[0].dest,
        "/app/settings.toml"
    );
    let text = "FROM base\nWORKDIR /app\nCOPY *.py ./\n";
    assert_eq!(placed(text, &[file("main.py")])[0].dest, "/app/main.py");
    // A later step writing into the same directory decides what is there.
    let text = "FROM base\nWORKDIR /app\nCOPY config.toml settings.toml\nCOPY *.py ./\n";
    assert!(full(text, &[file("config.toml")]).contains("write over"));
    // Two sources into a destination without a trailing slash: left to the builder.
    let text = "FROM base\nCOPY a.txt b.txt /data\n";
    assert!(full(text, &[file("a.txt")]).contains("ends with /"));
    // A wildcard matching a directory above the file.
    let why = full("FROM base\nCOPY sr* /app/\n", &[file("src/a.py")]);
    assert!(why.contains("wildcard"), "{why}");
    assert!(glob_match(
        &"p[a-c]?.t*".chars().collect::<Vec<_>>(),
        &"pb1.txt".chars().collect::<Vec<_>>()
    ));
    assert!(!glob_match(
        &"*.py".chars().collect::<Vec<_>>(),
        &"sub/a.py".chars().collect::<Vec<_>>()
    ));
}

#[test]
fn a_file_no_step_copies_is_left_out() {
    let text = "FROM base\nCOPY app.py /app/\n";
    assert!(full(text, &[file("notes.md")]).contains("no changed file"));
    let p = placed(text, &[file("notes.md"), file("app.py")]);
    assert_eq!(p.len(), 1);
}

#[test]
fn chown_is_resolved_from_the_images_users_and_groups() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    let group = "root:x:0:\nstaff:x:50:\napp:x:1002:\n";
    assert_eq!(resolve_chown("app", passwd, group), Ok((1000, 1002)));
    assert_eq!(resolve_chown("app:staff", passwd, group), Ok((1000, 50)));
    assert_eq!(resolve_chown("7:8", passwd, group), Ok((7, 8)));
    assert_eq!(resolve_chown("app:8", passwd, group), Ok((1000, 8)));
    let e = resolve_chown("nobody", passwd, group).unwrap_err();
    assert!(e.contains("no user `nobody`"), "{e}");
}

#[test]
fn archives_are_known_by_their_first_bytes() {
    assert!(is_archive(&[0x1f, 0x8b, 8, 0]));
    assert!(is_archive(b"BZh91AY"));
    let mut tar = vec![0u8; 512];
    tar[257..262].copy_from_slice(b"ustar");
    assert!(is_archive(&tar));
    assert!(!is_archive(b"print('hello')\n"));
}

#[test]
fn the_root_image_follows_stages_to_the_image_they_start_from() {
    let df =
        parse("FROM node:20 AS deps\nRUN x\nFROM deps AS dev\nCOPY . .\nFROM alpine\n").unwrap();
    assert_eq!(root_image(&df, None).as_deref(), Some("alpine"));
    assert_eq!(root_image(&df, Some("dev")).as_deref(), Some("node:20"));
    assert_eq!(root_image(&df, Some("nope")), None);
    let df = parse("ARG BASE=x\nFROM $BASE\n").unwrap();
    assert_eq!(root_image(&df, None), None);
}
