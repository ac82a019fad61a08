use super::link::level_index;

#[test]
fn levels_are_ordered() {
    assert!(level_index("debug") < level_index("info"));
    assert!(level_index("warning") < level_index("error"));
    assert_eq!(level_index("emergency"), 7);
}
