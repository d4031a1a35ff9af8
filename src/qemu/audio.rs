//! `[audio]` on the command line: one `-audiodev` and the sound card that
//! plays into it.

use super::argv::Argv;
use super::opts::Opts;
use crate::config::AudioModel;
use crate::plan::audio::AudioDriver;
use crate::plan::Plan;

/// The audiodev's id, named by the card's `audiodev=`.
const AUDIODEV: &str = "snd0";

/// QEMU's audio timer, in microseconds: how often its mixing engine moves
/// samples between the card and the backend. QEMU's default, 10 ms, hands
/// the server bursts as long as a short server period, and a late burst is
/// a crackle; 2 ms evens the feed out (QEMU's maintainers name 1 ms as
/// the floor: below it the timer costs more than it smooths).
const TIMER_PERIOD_US: &str = "2000";

/// The server-side buffer asked for per direction, in microseconds: QEMU's
/// own default for `pa` and `pipewire` (two 1024-frame periods at
/// 44.1 kHz), written out so that the VM keeps it whatever a QEMU release
/// changes. Desktop servers run short quanta (PipeWire's default is 1024
/// frames at 48 kHz, ~21 ms); asking for less than two of them is where
/// guests crackle.
const LATENCY_US: &str = "46440";

pub(crate) fn audio(a: &mut Argv, plan: &Plan) {
    let Some(audio) = &plan.audio else {
        return;
    };
    let stream = format!("vmrun {}", plan.vm.name.as_str());
    let driver = match audio.driver {
        AudioDriver::Pipewire => "pipewire",
        AudioDriver::Pa => "pa",
        AudioDriver::Alsa => "alsa",
        AudioDriver::Spice => "spice",
    };
    // `pa` takes the server's address; `unix:PATH` is libpulse's spelling
    // of a socket (pa_parse_address). Given a server, libpulse never
    // autospawns a daemon, a fork that `-sandbox spawn=deny` would kill.
    let server = (audio.driver == AudioDriver::Pa)
        .then_some(audio.server.as_ref())
        .flatten()
        .map(|s| {
            let mut unix = std::ffi::OsString::from("unix:");
            unix.push(s);
            unix
        });
    let mut dev = Opts::new(driver)
        .set("id", AUDIODEV)
        .set_opt("server", server);
    if matches!(audio.driver, AudioDriver::Pipewire | AudioDriver::Pa) {
        // The stream's name in the server's mixer (pavucontrol, pw-top).
        dev = dev
            .set("timer-period", TIMER_PERIOD_US)
            .set("out.latency", LATENCY_US)
            .set("in.latency", LATENCY_US)
            .set("out.stream-name", &stream)
            .set("in.stream-name", &stream);
    } else if audio.driver == AudioDriver::Alsa {
        dev = dev.set("timer-period", TIMER_PERIOD_US);
    }
    a.opt("-audiodev", dev);
    match audio.model {
        AudioModel::Hda => {
            a.opt("-device", Opts::new("ich9-intel-hda").set("id", "snd-hda"));
            // hda-duplex: a line out and a line in, so the guest's
            // microphone reaches the host's too.
            a.opt(
                "-device",
                Opts::new("hda-duplex")
                    .set("bus", "snd-hda.0")
                    .set("audiodev", AUDIODEV),
            );
        }
        AudioModel::Usb => a.opt(
            "-device",
            Opts::new("usb-audio")
                .set("bus", super::devices::XHCI_BUS)
                .set("audiodev", AUDIODEV),
        ),
    }
}
