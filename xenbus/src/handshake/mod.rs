//! The XenbusState handshake between a device's frontend and backend, driven by
//! store watches (no polling).
//!
//! Layout (`xen/io/blkif.h`, `netif.h`; what `xl` creates):
//!
//! ```text
//! /local/domain/<be>/backend/<type>/<fe>/<devid>/   frontend, frontend-id, state, online, ...
//! /local/domain/<fe>/device/<type>/<devid>/         backend, backend-id, state, ...
//! ```
//!
//! Each side writes its own `state` and watches the other's. The usual dance:
//! backend `InitWait` (features advertised) -> frontend `Initialised` (rings and
//! event channels published) -> backend `Connected` -> frontend `Connected`.
//! Teardown: either side `Closing` -> the other `Closing`/`Closed` -> `Closed`. A
//! frontend that comes back to `Initialising` after `Closed` asks to reconnect;
//! the backend answers by going to `InitWait` again.
//!
//! - [`keys`]: the names of every key the drivers write and read, and their parser;
//! - `device`: [`DevicePaths`], creating and removing a device's directories;
//! - `endpoint`: [`Endpoint`], one end of the handshake.

mod device;
mod endpoint;
pub mod keys;

pub use device::{
    DeviceKind, DevicePaths, create_device, create_device_with, destroy_device, vbd_frontend_keys,
};
pub use endpoint::{
    Endpoint, Hotplug, Reopen, Role, device_gone, device_offline, error_node, frontend_ready,
    hotplug_state, peer_leaving, read_state,
};
