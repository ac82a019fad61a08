use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};
use notify::{Event, EventKind};

use std::path::Path;

use super::*;

fn filter() -> EventFilter {
    EventFilter {
        plugins_dir: PathBuf::from("/srv/plugins"),
        config_file: Some(PathBuf::from("/etc/stockade/stockade.toml")),
    }
}

fn event(kind: EventKind, paths: &[&str]) -> Event {
    let mut e = Event::new(kind);
    for p in paths {
        e = e.add_path(PathBuf::from(p));
    }
    e
}

#[test]
fn closes_after_writing_and_renames_in_mark_a_plugin_complete() {
    let f = filter();
    let closed = event(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        &["/srv/plugins/a.wasm"],
    );
    assert_eq!(
        f.classify(&closed),
        Some(Relevant::Complete("/srv/plugins/a.wasm".into()))
    );
    let renamed = event(
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
        &["/srv/plugins/.a.wasm.tmp", "/srv/plugins/a.wasm"],
    );
    assert_eq!(
        f.classify(&renamed),
        Some(Relevant::Complete("/srv/plugins/a.wasm".into()))
    );
    let moved_in = event(
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        &["/srv/plugins/b.wasm"],
    );
    assert_eq!(
        f.classify(&moved_in),
        Some(Relevant::Complete("/srv/plugins/b.wasm".into()))
    );
    // Reading, a closed read, and files elsewhere or of other kinds are not.
    let read = event(
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
        &["/srv/plugins/a.wasm"],
    );
    assert_eq!(f.classify(&read), None);
    let elsewhere = event(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        &["/tmp/a.wasm"],
    );
    assert_eq!(f.classify(&elsewhere), None);
    let sig = event(
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        &["/srv/plugins/a.wasm.sig"],
    );
    assert_eq!(
        f.classify(&sig),
        Some(Relevant::Plugin(Some("/srv/plugins/a.wasm.sig".into())))
    );
}

#[test]
fn a_burst_is_complete_only_when_every_file_it_touched_is() {
    let f = filter();
    let mut burst = Burst::default();
    let write = |p: &str| {
        f.classify(&event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &[p],
        ))
        .unwrap()
    };
    let close = |p: &str| {
        f.classify(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &[p],
        ))
        .unwrap()
    };
    burst.add(
        f.classify(&event(
            EventKind::Create(CreateKind::File),
            &["/srv/plugins/a.wasm"],
        ))
        .unwrap(),
    );
    burst.add(write("/srv/plugins/a.wasm"));
    assert!(!burst.all_complete(), "still being written");
    burst.add(write("/srv/plugins/b.wasm"));
    burst.add(close("/srv/plugins/a.wasm"));
    assert!(!burst.all_complete(), "b is still being written");
    burst.add(close("/srv/plugins/b.wasm"));
    assert!(burst.all_complete());
    assert!(
        burst.complete.contains(Path::new("a.wasm"))
            && burst.complete.contains(Path::new("b.wasm"))
    );
    // Written again after its close: no longer known complete.
    burst.add(write("/srv/plugins/a.wasm"));
    assert!(!burst.all_complete());
    assert!(!burst.complete.contains(Path::new("a.wasm")));
    // An event without a path (an overflowed queue) settles nothing.
    let mut unknown = Burst::default();
    unknown.add(close("/srv/plugins/a.wasm"));
    unknown.add(Relevant::Plugin(None));
    assert!(!unknown.all_complete());
}
