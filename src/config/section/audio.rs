//! `[audio]`: an emulated sound card whose output and input go to a sound
//! server on the host (the desktop user's PipeWire or PulseAudio), to ALSA,
//! or to the SPICE client.

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::qemu::desktop_user;

/// Where the guest's sound goes on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioBackend {
    /// No sound card.
    None,
    /// The desktop user's PipeWire (QEMU's own `pipewire` audiodev from
    /// QEMU 8.1, pipewire-pulse before).
    Pipewire,
    /// The desktop user's PulseAudio (or pipewire-pulse).
    Pulseaudio,
    /// ALSA's default device, opened by QEMU itself.
    Alsa,
    /// The SPICE client plays it (needs a SPICE display).
    Spice,
}

/// The guest's sound card.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioModel {
    /// Intel HD Audio (`ich9-intel-hda` + `hda-duplex`): every guest has
    /// its driver.
    #[default]
    Hda,
    /// A USB audio device (`usb-audio`), on the VM's xHCI controller.
    Usb,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireAudio {
    backend: S<AudioBackend>,
    model: Option<AudioModel>,
    user: S<String>,
}

/// `[audio]` as checked; absent when `backend` is `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audio {
    pub backend: AudioBackend,
    pub model: AudioModel,
    /// Whose sound server; `None`: the desktop's user (sudo's, else seat0's).
    pub user: Option<String>,
}

/// Checks `[audio]`; `spice` says whether QEMU serves SPICE (a spice
/// display, or Looking Glass's SPICE), which the `spice` backend plays
/// through.
pub(crate) fn check(w: S<WireAudio>, spice: bool, v: &mut Checker<'_>) -> Option<Audio> {
    let (_, w) = parts(w?);
    let (span, backend) = parts(w.backend?);
    if backend == AudioBackend::None {
        return None;
    }
    if backend == AudioBackend::Spice && !spice {
        v.err("audio.backend", span, K::AudioSpiceWithoutSpice);
    }
    let user = desktop_user(w.user, "audio.user", v);
    Some(Audio {
        backend,
        model: w.model.unwrap_or_default(),
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check as check_file};

    fn audio(text: &str) -> Option<Audio> {
        check_file(&format!("[audio]\n{text}"))
            .expect("valid")
            .audio
    }

    #[test]
    fn defaults_are_hda_and_the_desktop_user() {
        let a = audio("backend = \"pipewire\"\n").unwrap();
        assert_eq!(
            (a.backend, a.model, a.user),
            (AudioBackend::Pipewire, AudioModel::Hda, None)
        );
        let a = audio("backend = \"pulseaudio\"\nmodel = \"usb\"\nuser = \"auto\"\n").unwrap();
        assert_eq!((a.model, a.user), (AudioModel::Usb, None));
    }

    #[test]
    fn a_named_user_is_kept() {
        let a = audio("backend = \"alsa\"\nuser = \"alice\"\n").unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
    }

    #[test]
    fn none_or_no_backend_is_no_sound_card() {
        assert_eq!(audio("backend = \"none\"\nmodel = \"usb\"\n"), None);
        assert_eq!(audio("model = \"usb\"\n"), None);
        assert!(check_file("").unwrap().audio.is_none());
    }

    #[test]
    fn spice_plays_through_a_spice_display_or_looking_glass() {
        let a = check_file("[display]\nmode = \"spice\"\n[audio]\nbackend = \"spice\"\n").unwrap();
        assert_eq!(a.audio.unwrap().backend, AudioBackend::Spice);
        let lg = "[looking_glass]\nsize = \"32M\"\nspice = true\n[audio]\nbackend = \"spice\"\n";
        assert!(check_file(lg).unwrap().audio.is_some());
    }

    #[test]
    fn bad_values_are_refused() {
        let t = "[audio]\n";
        assert_problems(&[
            (
                &format!("{t}backend = \"spice\"\n"),
                &[K::AudioSpiceWithoutSpice],
            ),
            (
                &format!("{t}backend = \"pipewire\"\nuser = \"root\"\n"),
                &[K::BadUser("root".into())],
            ),
            (
                &format!("{t}backend = \"pipewire\"\nuser = \"Bad User\"\n"),
                &[K::BadUser("Bad User".into())],
            ),
        ]);
    }
}
