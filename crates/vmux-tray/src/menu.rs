//! The menu, served as `com.canonical.dbusmenu` at [`MENU_PATH`]: one
//! flat level under the root (id 0). Text lines are disabled items; the
//! actions keep fixed ids ([`Action::ALL`]). Every change of the view
//! bumps the revision and emits `LayoutUpdated`; hosts then ask
//! `GetLayout` again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{Array, Dict, OwnedValue, Str, StructureBuilder, Value};

use crate::model::{Action, Entry, View};
use vmux_home::sync::lock;

/// Where the menu is served.
pub const MENU_PATH: &str = "/MenuBar";

/// Ids of text lines and separators start here (actions keep theirs).
const FIRST_LINE_ID: i32 = 100;

/// What is shown now, and its revision.
#[derive(Debug)]
pub struct Shown {
    /// The view.
    pub view: View,
    /// Bumped at every change.
    pub revision: u32,
}

/// Shared between the D-Bus objects and the tray's loop.
pub type SharedView = Arc<Mutex<Shown>>;

/// One item's properties.
type Props = HashMap<String, OwnedValue>;

/// A layout node: id, properties, children (each a variant holding a
/// node).
type Node = (i32, Props, Vec<OwnedValue>);

fn text(s: &str) -> OwnedValue {
    OwnedValue::from(Str::from(s.to_owned()))
}

/// The items under the root, with their ids.
fn items(view: &View) -> Vec<(i32, Props)> {
    let mut next_line = FIRST_LINE_ID;
    view.entries
        .iter()
        .map(|e| {
            let mut p = Props::new();
            let id = match e {
                Entry::Line(l) => {
                    p.insert("label".into(), text(&l.replace('_', "__")));
                    p.insert("enabled".into(), OwnedValue::from(false));
                    next_line += 1;
                    next_line - 1
                }
                Entry::Separator => {
                    p.insert("type".into(), text("separator"));
                    next_line += 1;
                    next_line - 1
                }
                Entry::Action(a, enabled) => {
                    p.insert("label".into(), text(a.label()));
                    p.insert("enabled".into(), OwnedValue::from(*enabled));
                    Action::ALL
                        .iter()
                        .find(|(_, x)| x == a)
                        .map_or(0, |(id, _)| *id)
                }
            };
            (id, p)
        })
        .collect()
}

fn filtered(mut p: Props, names: &[String]) -> Props {
    if !names.is_empty() {
        p.retain(|k, _| names.contains(k));
    }
    p
}

fn node(id: i32, props: Props, children: Vec<OwnedValue>) -> zbus::fdo::Result<OwnedValue> {
    let s = StructureBuilder::new()
        .add_field(id)
        .append_field(Value::from(Dict::from(props)))
        .append_field(Value::from(Array::from(children)))
        .build()
        .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
    OwnedValue::try_from(s).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
}

/// The `com.canonical.dbusmenu` object.
pub struct Menu {
    /// The view it serves.
    pub shown: SharedView,
    /// Where clicks go.
    pub clicks: mpsc::Sender<Action>,
}

impl Menu {
    fn click(&self, id: i32, event: &str) {
        if event != "clicked" {
            return;
        }
        if let Some(a) = Action::by_id(id) {
            let enabled = lock(&self.shown)
                .view
                .entries
                .contains(&Entry::Action(a, true));
            if enabled {
                // Never waits: a flood of clicks is dropped, not queued.
                let _ = self.clicks.try_send(a);
            }
        }
    }
}

#[zbus::interface(name = "com.canonical.dbusmenu")]
impl Menu {
    #[zbus(out_args("revision", "layout"))]
    fn get_layout(
        &self,
        parent_id: i32,
        recursion_depth: i32,
        property_names: Vec<String>,
    ) -> zbus::fdo::Result<(u32, Node)> {
        let (revision, items) = {
            let shown = lock(&self.shown);
            (shown.revision, items(&shown.view))
        };
        if parent_id != 0 {
            return match items.into_iter().find(|(id, _)| *id == parent_id) {
                Some((id, p)) => Ok((revision, (id, filtered(p, &property_names), Vec::new()))),
                None => Err(zbus::fdo::Error::InvalidArgs(format!(
                    "no menu item {parent_id}"
                ))),
            };
        }
        let children = if recursion_depth == 0 {
            Vec::new()
        } else {
            items
                .into_iter()
                .map(|(id, p)| node(id, filtered(p, &property_names), Vec::new()))
                .collect::<zbus::fdo::Result<_>>()?
        };
        let mut root = Props::new();
        root.insert("children-display".into(), text("submenu"));
        Ok((revision, (0, filtered(root, &property_names), children)))
    }

    fn get_group_properties(
        &self,
        ids: Vec<i32>,
        property_names: Vec<String>,
    ) -> Vec<(i32, Props)> {
        let all = items(&lock(&self.shown).view);
        all.into_iter()
            .filter(|(id, _)| ids.is_empty() || ids.contains(id))
            .map(|(id, p)| (id, filtered(p, &property_names)))
            .collect()
    }

    fn get_property(&self, id: i32, name: String) -> zbus::fdo::Result<OwnedValue> {
        items(&lock(&self.shown).view)
            .into_iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, mut p)| p.remove(&name))
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("no property {name} on {id}")))
    }

    fn event(&self, id: i32, event_id: String, _data: OwnedValue, _timestamp: u32) {
        self.click(id, &event_id);
    }

    fn event_group(&self, events: Vec<(i32, String, OwnedValue, u32)>) -> Vec<i32> {
        let known = items(&lock(&self.shown).view);
        let mut errors = Vec::new();
        for (id, event, _, _) in events {
            if known.iter().any(|(i, _)| *i == id) {
                self.click(id, &event);
            } else {
                errors.push(id);
            }
        }
        errors
    }

    fn about_to_show(&self, _id: i32) -> bool {
        false
    }

    fn about_to_show_group(&self, _ids: Vec<i32>) -> (Vec<i32>, Vec<i32>) {
        (Vec::new(), Vec::new())
    }

    #[zbus(property)]
    fn version(&self) -> u32 {
        3
    }

    #[zbus(property)]
    fn text_direction(&self) -> &str {
        "ltr"
    }

    #[zbus(property)]
    fn status(&self) -> &str {
        "normal"
    }

    #[zbus(property)]
    fn icon_theme_path(&self) -> Vec<String> {
        Vec::new()
    }

    #[zbus(signal)]
    pub async fn layout_updated(
        emitter: &SignalEmitter<'_>,
        revision: u32,
        parent: i32,
    ) -> zbus::Result<()>;
}
