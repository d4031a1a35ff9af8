//! `vmrun console NAME`: the terminal attached to the VM's serial console
//! socket. The terminal goes raw (keys reach the guest as typed, Ctrl-C
//! included); Ctrl-] leaves, as in telnet and virsh console.

use std::io::IsTerminal;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::vm_ops::vm_paths;
use crate::exit::Exit;

/// Ctrl-]: the escape byte.
const ESCAPE: u8 = 0x1d;

/// Puts stdin in raw mode for its lifetime.
struct RawTerminal(Option<Termios>);

impl RawTerminal {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

pub(super) fn console(vm: &str) -> Exit {
    let (name, paths) = match vm_paths(vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Exit::VmFailed;
    };
    let result = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&paths.console_socket).await?;
        eprintln!("connected to {name}'s serial console; Ctrl-] leaves\r");
        let _raw = RawTerminal::enter();
        let (mut from_vm, mut to_vm) = stream.into_split();
        let mut stdin = tokio::io::stdin();
        let mut stdout = tokio::io::stdout();
        let mut in_buf = [0u8; 1024];
        let mut out_buf = [0u8; 4096];
        loop {
            tokio::select! {
                n = from_vm.read(&mut out_buf) => {
                    let n = n?;
                    if n == 0 { return Ok::<_, std::io::Error>(()); }
                    stdout.write_all(&out_buf[..n]).await?;
                    stdout.flush().await?;
                }
                n = stdin.read(&mut in_buf) => {
                    let n = n?;
                    if n == 0 { return Ok(()); }
                    let data = &in_buf[..n];
                    if let Some(at) = data.iter().position(|b| *b == ESCAPE) {
                        to_vm.write_all(&data[..at]).await?;
                        return Ok(());
                    }
                    to_vm.write_all(data).await?;
                }
            }
        }
    });
    rt.shutdown_background();
    match result {
        Ok(()) => {
            eprintln!("\r\nleft {name}'s console");
            Exit::Ok
        }
        // The reader of our stdout went away (`| head`): nothing to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!(
                "vmrun: {name}: console {}: {e} (is it running? `vmrun status {name}`)",
                paths.console_socket.display()
            );
            Exit::HostProblems
        }
    }
}
