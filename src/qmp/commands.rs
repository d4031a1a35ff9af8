//! The commands the supervisor uses, with results in vmrun's own small
//! types. Commands whose replies carry enums or structs QEMU keeps growing
//! are decoded here, leniently, from the raw reply: `qapi`'s types for
//! `query-cpus-fast` have failed to decode on real hosts (qapi-rs#17), and
//! a new `RunState` would otherwise fail `query-status` outright.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{QmpClient, QmpError};

/// QEMU's run state (`query-status` `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Known(qapi::qmp::RunState),
    /// A state added after QEMU 9.1.
    Other(String),
}

impl RunStatus {
    fn from_wire(s: &str) -> Self {
        serde_json::from_value(Value::String(s.to_owned()))
            .map(RunStatus::Known)
            .unwrap_or_else(|_| RunStatus::Other(s.to_owned()))
    }
}

/// The `query-status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// True when vCPUs run (QEMU: "true if all VCPUs are runnable").
    pub running: bool,
    pub status: RunStatus,
}

/// One vCPU and the host thread that runs it, for pinning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VcpuThread {
    #[serde(rename = "cpu-index")]
    pub cpu_index: u32,
    /// Host TID (`gettid`) of the vCPU thread; what `sched_setaffinity` takes.
    #[serde(rename = "thread-id")]
    pub thread_id: i32,
}

/// One PCI function of the guest, flattened out of `query-pci`'s bus tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    pub vendor: u16,
    pub device: u16,
    /// The `-device id=`; empty when the device has none.
    pub qdev_id: String,
}

#[derive(Deserialize)]
struct RawStatus {
    running: bool,
    status: String,
}

#[derive(Deserialize)]
struct RawBus {
    devices: Vec<RawPciDevice>,
}

#[derive(Deserialize)]
struct RawPciDevice {
    bus: u8,
    slot: u8,
    function: u8,
    id: RawPciId,
    #[serde(default)]
    qdev_id: String,
    #[serde(default)]
    pci_bridge: Option<RawBridge>,
}

#[derive(Deserialize)]
struct RawPciId {
    vendor: u16,
    device: u16,
}

#[derive(Deserialize)]
struct RawBridge {
    #[serde(default)]
    devices: Vec<RawPciDevice>,
}

fn decode<T: serde::de::DeserializeOwned>(command: &str, v: Value) -> Result<T, QmpError> {
    serde_json::from_value(v).map_err(|source| QmpError::Decode {
        command: command.to_owned(),
        source,
    })
}

fn flatten(devices: Vec<RawPciDevice>, out: &mut Vec<PciFunction>) {
    for d in devices {
        out.push(PciFunction {
            bus: d.bus,
            slot: d.slot,
            function: d.function,
            vendor: d.id.vendor,
            device: d.id.device,
            qdev_id: d.qdev_id,
        });
        if let Some(bridge) = d.pci_bridge {
            flatten(bridge.devices, out);
        }
    }
}

pub(super) fn decode_status(v: Value) -> Result<VmStatus, QmpError> {
    let raw: RawStatus = decode("query-status", v)?;
    Ok(VmStatus {
        running: raw.running,
        status: RunStatus::from_wire(&raw.status),
    })
}

pub(super) fn decode_pci(v: Value) -> Result<Vec<PciFunction>, QmpError> {
    let buses: Vec<RawBus> = decode("query-pci", v)?;
    let mut out = Vec::new();
    for bus in buses {
        flatten(bus.devices, &mut out);
    }
    Ok(out)
}

/// Where QEMU keeps the devices given an id, on its command line or by
/// `device_add` (`qdev_set_id`).
const PERIPHERALS: &str = "/machine/peripheral";

/// One `usb-host` of the VM, as QOM shows its properties: 0 or "" for a
/// property it does not match on (host-libusb's `usb_host_auto_check`
/// skips the zero ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbHost {
    pub id: String,
    pub vendor: u16,
    pub product: u16,
    pub hostbus: u8,
    /// `4.2`: the port path below the bus.
    pub hostport: String,
    /// A host device is open and on the guest's bus; false while the
    /// device is away from the host.
    pub attached: bool,
}

impl QmpClient {
    /// `query-status`.
    pub async fn query_status(&self) -> Result<VmStatus, QmpError> {
        decode_status(self.execute_raw("query-status", None).await?)
    }

    /// `cont`: starts the vCPUs of a VM started with `-S` or stopped.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute(qapi::qmp::cont {}).await.map(drop)
    }

    /// `stop`: pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute(qapi::qmp::stop {}).await.map(drop)
    }

    /// `system_powerdown`: an ACPI power button press. The guest may ignore
    /// it (no OS yet, or it is busy), so callers re-send and escalate.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute(qapi::qmp::system_powerdown {}).await.map(drop)
    }

    /// `quit`: QEMU exits without asking the guest. QEMU sends the reply and
    /// then exits, and the connection can close before the reply is read, so
    /// `Disconnected` counts as success here.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute(qapi::qmp::quit {}).await {
            Ok(_) | Err(QmpError::Disconnected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `query-cpus-fast`: each vCPU's host thread id, for pinning.
    pub async fn query_cpus_fast(&self) -> Result<Vec<VcpuThread>, QmpError> {
        decode(
            "query-cpus-fast",
            self.execute_raw("query-cpus-fast", None).await?,
        )
    }

    /// `query-pci`, flattened across buses and bridges.
    pub async fn query_pci(&self) -> Result<Vec<PciFunction>, QmpError> {
        decode_pci(self.execute_raw("query-pci", None).await?)
    }

    /// The VM's `usb-host` devices, by `qom-list` and `qom-get` (both with
    /// these names in QEMU 7.2 and 10.0).
    pub async fn usb_hosts(&self) -> Result<Vec<UsbHost>, QmpError> {
        let children = self
            .execute_raw("qom-list", Some(json!({ "path": PERIPHERALS })))
            .await?;
        let mut out = Vec::new();
        for child in children.as_array().map_or(&[][..], Vec::as_slice) {
            let (Some(id), Some("child<usb-host>")) =
                (child["name"].as_str(), child["type"].as_str())
            else {
                continue;
            };
            let path = format!("{PERIPHERALS}/{id}");
            let get = |property: &'static str| {
                let args = json!({ "path": path, "property": property });
                self.execute_raw("qom-get", Some(args))
            };
            let num = |v: Value| v.as_u64().unwrap_or(0);
            out.push(UsbHost {
                id: id.to_string(),
                vendor: u16::try_from(num(get("vendorid").await?)).unwrap_or(0),
                product: u16::try_from(num(get("productid").await?)).unwrap_or(0),
                hostbus: u8::try_from(num(get("hostbus").await?)).unwrap_or(0),
                hostport: get("hostport").await?.as_str().unwrap_or("").to_string(),
                attached: get("attached").await?.as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_status_known_state_is_typed() {
        let s =
            decode_status(json!({"running": false, "singlestep": false, "status": "prelaunch"}))
                .expect("valid");
        assert_eq!(
            s,
            VmStatus {
                running: false,
                status: RunStatus::Known(qapi::qmp::RunState::prelaunch)
            }
        );
    }

    #[test]
    fn decode_status_future_state_is_kept_as_text() {
        let s =
            decode_status(json!({"running": true, "status": "some-future-state"})).expect("valid");
        assert_eq!(s.status, RunStatus::Other("some-future-state".into()));
    }

    #[test]
    fn decode_status_missing_field_is_decode_error() {
        let e = decode_status(json!({"status": "running"})).unwrap_err();
        assert!(matches!(e, QmpError::Decode { .. }), "{e:?}");
    }

    #[test]
    fn decode_cpus_fast_reads_index_and_thread_and_ignores_the_rest() {
        // QEMU 7.2 x86 reply shape, with a field from a future version.
        let v = json!([{"thread-id": 4242, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0},
                        "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64",
                        "future-field": {"x": 1}}]);
        let cpus: Vec<VcpuThread> = decode("query-cpus-fast", v).expect("valid");
        assert_eq!(
            cpus,
            vec![VcpuThread {
                cpu_index: 0,
                thread_id: 4242
            }]
        );
    }

    #[test]
    fn decode_pci_flattens_bridges() {
        let v = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "class_info": {"class": 1536},
             "id": {"vendor": 32902, "device": 10688}, "qdev_id": "", "regions": []},
            {"bus": 0, "slot": 28, "function": 0, "class_info": {"class": 1540},
             "id": {"vendor": 6966, "device": 12}, "qdev_id": "rp1", "regions": [],
             "pci_bridge": {"bus": {"number": 1, "secondary": 1, "subordinate": 1},
                            "devices": [{"bus": 1, "slot": 0, "function": 1,
                                         "id": {"vendor": 4318, "device": 8843},
                                         "qdev_id": "gpu-audio", "regions": []}]}}]}]);
        let pci = decode_pci(v).expect("valid");
        assert_eq!(pci.len(), 3);
        assert_eq!(
            pci[2],
            PciFunction {
                bus: 1,
                slot: 0,
                function: 1,
                vendor: 0x10de,
                device: 0x228b,
                qdev_id: "gpu-audio".into()
            }
        );
    }
}
