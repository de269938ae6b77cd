//! The icon, served as `org.kde.StatusNotifierItem` at [`ITEM_PATH`]
//! (the protocol KDE, GNOME's AppIndicator extension, waybar, xfce and
//! others show). Themed icon names with pixmaps as fallback; the menu is
//! `crate::menu`'s, and a click on the icon opens it (`ItemIsMenu`).

use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;

use crate::icons::{self, Pixmap};
use crate::menu::{SharedView, MENU_PATH};
use crate::model::{ATTENTION_ICON, CERTIFICATE_BADGE};
use vmux_home::sync::lock;

/// Where the item is served.
pub const ITEM_PATH: &str = "/StatusNotifierItem";

/// The `org.kde.StatusNotifierItem` object.
pub struct Item {
    /// The view it shows.
    pub shown: SharedView,
}

#[zbus::interface(name = "org.kde.StatusNotifierItem")]
impl Item {
    #[zbus(property)]
    fn category(&self) -> &str {
        "ApplicationStatus"
    }

    #[zbus(property)]
    fn id(&self) -> &str {
        "vmux"
    }

    #[zbus(property)]
    fn title(&self) -> &str {
        "vmux"
    }

    #[zbus(property)]
    fn status(&self) -> String {
        lock(&self.shown).view.status().to_owned()
    }

    #[zbus(property)]
    fn window_id(&self) -> i32 {
        0
    }

    #[zbus(property)]
    fn icon_name(&self) -> String {
        lock(&self.shown).view.icon.name().to_owned()
    }

    #[zbus(property)]
    fn icon_pixmap(&self) -> Vec<Pixmap> {
        icons::pixmaps(lock(&self.shown).view.icon)
    }

    #[zbus(property)]
    fn overlay_icon_name(&self) -> String {
        if lock(&self.shown).view.certificate {
            CERTIFICATE_BADGE.to_owned()
        } else {
            String::new()
        }
    }

    #[zbus(property)]
    fn overlay_icon_pixmap(&self) -> Vec<Pixmap> {
        if lock(&self.shown).view.certificate {
            icons::badge()
        } else {
            Vec::new()
        }
    }

    #[zbus(property)]
    fn attention_icon_name(&self) -> &str {
        ATTENTION_ICON
    }

    #[zbus(property)]
    fn attention_icon_pixmap(&self) -> Vec<Pixmap> {
        icons::attention()
    }

    #[zbus(property)]
    fn attention_movie_name(&self) -> &str {
        ""
    }

    #[zbus(property)]
    fn tool_tip(&self) -> (String, Vec<Pixmap>, String, String) {
        let shown = lock(&self.shown);
        let (title, text) = shown.view.tooltip.clone();
        (shown.view.icon.name().to_owned(), Vec::new(), title, text)
    }

    #[zbus(property)]
    fn item_is_menu(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn menu(&self) -> OwnedObjectPath {
        OwnedObjectPath::try_from(MENU_PATH).unwrap_or_default()
    }

    fn context_menu(&self, _x: i32, _y: i32) {}

    fn activate(&self, _x: i32, _y: i32) {}

    fn secondary_activate(&self, _x: i32, _y: i32) {}

    fn scroll(&self, _delta: i32, _orientation: String) {}

    #[zbus(signal)]
    pub async fn new_icon(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn new_overlay_icon(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn new_attention_icon(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn new_tool_tip(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn new_status(emitter: &SignalEmitter<'_>, status: &str) -> zbus::Result<()>;
}
