//! The launcher's environment and the TCP rendezvous that hands NCCL's unique id from rank 0 to
//! the other ranks.
//!
//! Read as `torchrun` sets it (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
//! else as Slurm's `srun` does (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`: the
//! step's tasks, so a batch script's own shell, outside `srun`, is no launch; the master's address
//! and port must be exported by the batch script, see `training/README.md`).
//!
//! The port: under `torchrun` its agent already serves its own store on `MASTER_PORT` (the agent
//! store, `TORCHELASTIC_USE_AGENT_STORE=True`), so rank 0 listens on `MASTER_PORT + 1`; under
//! `srun` on `MASTER_PORT`. `IKOL_RDZV_PORT` overrides both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Where this process sits in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The GPU ordinal on this node.
    pub local_rank: usize,
    pub master_addr: String,
    /// The port rank 0's rendezvous listens on.
    pub port: u16,
}

impl Launch {
    /// The launch read from the process environment; None for a single process (no launcher, or
    /// a world of one).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable source (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let pick = |names: &[&str]| -> Option<(String, String)> {
            names
                .iter()
                .find_map(|n| var(n).map(|v| (n.to_string(), v)))
        };
        let number = |name: &str, value: &str| -> anyhow::Result<usize> {
            value
                .trim()
                .parse()
                .with_context(|| format!("launcher variable {name}={value:?} is not a number"))
        };
        let Some((wname, w)) = pick(&["WORLD_SIZE", "SLURM_STEP_NUM_TASKS"]) else {
            return Ok(None);
        };
        let world_size = number(&wname, &w)?;
        if world_size <= 1 {
            return Ok(None);
        }
        let (rname, r) = pick(&["RANK", "SLURM_PROCID"]).with_context(|| {
            format!("{wname}={world_size} but neither RANK nor SLURM_PROCID is set")
        })?;
        let rank = number(&rname, &r)?;
        ensure!(
            rank < world_size,
            "launcher: {rname}={rank} is not below {wname}={world_size}"
        );
        let local_rank = match pick(&["LOCAL_RANK", "SLURM_LOCALID"]) {
            Some((n, v)) => number(&n, &v)?,
            None => 0,
        };
        let master_addr =
            var("MASTER_ADDR").context("a multi-process run needs MASTER_ADDR (rank 0's host)")?;
        let port = |name: &str, value: &str| -> anyhow::Result<u16> {
            value
                .trim()
                .parse()
                .with_context(|| format!("{name}={value:?} is not a port"))
        };
        let master_port = port(
            "MASTER_PORT",
            &var("MASTER_PORT").context("a multi-process run needs MASTER_PORT")?,
        )?;
        let torchrun = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let port = match var("IKOL_RDZV_PORT") {
            Some(p) => port("IKOL_RDZV_PORT", &p)?,
            None if torchrun => master_port
                .checked_add(1)
                .context("MASTER_PORT 65535 leaves no port for the rendezvous")?,
            None => master_port,
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            port,
        }))
    }
}

const MAGIC: &[u8; 8] = b"IKOLRDZV";

/// Rank 0 hands `payload` to every other rank; every rank returns it. Rank 0 listens on
/// `(addr, port)` (all interfaces) until all `world - 1` ranks have asked; the others connect,
/// retrying until `timeout` (rank 0 may start later).
pub fn share_from_rank0(
    launch: &Launch,
    payload: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    if launch.rank == 0 {
        let payload = payload.context("rank 0 must provide the payload")?;
        let listener = TcpListener::bind(("0.0.0.0", launch.port))
            .with_context(|| format!("rendezvous: rank 0 cannot listen on port {}", launch.port))?;
        listener.set_nonblocking(true)?;
        let mut seen = vec![false; launch.world_size];
        seen[0] = true;
        let mut served = 1;
        while served < launch.world_size {
            match listener.accept() {
                // A peer that is not a rank of this run, or one that went away, is skipped with
                // a warning: the rendezvous waits for the real ranks until the deadline.
                Ok((s, peer)) => match serve(s, launch, payload) {
                    Ok(rank) if !seen[rank] => {
                        seen[rank] = true;
                        served += 1;
                    }
                    // A rank asking again (its first attempt timed out): served again.
                    Ok(_) => {}
                    Err(e) => eprintln!("rendezvous: ignoring {peer}: {e:#}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<usize> =
                            (0..launch.world_size).filter(|&r| !seen[r]).collect();
                        bail!(
                            "rendezvous: ranks {missing:?} did not arrive within {} s",
                            timeout.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("rendezvous: accept"),
            }
        }
        return Ok(payload.to_vec());
    }
    let target = format!("{}:{}", launch.master_addr, launch.port);
    loop {
        let attempt = (|| -> anyhow::Result<Vec<u8>> {
            // Every address the name resolves to (`localhost` may give ::1 first; rank 0
            // listens on IPv4).
            let addrs: Vec<_> = target
                .to_socket_addrs()
                .with_context(|| format!("resolving MASTER_ADDR {target}"))?
                .collect();
            let mut s = addrs
                .iter()
                .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(5)).ok())
                .with_context(|| format!("nothing listens at {target} yet"))?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut hello = MAGIC.to_vec();
            hello.extend((launch.rank as u32).to_le_bytes());
            hello.extend((launch.world_size as u32).to_le_bytes());
            s.write_all(&hello)?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            ensure!(
                len <= 1 << 20,
                "rendezvous: a payload of {len} bytes is not ours"
            );
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf)?;
            Ok(buf)
        })();
        match attempt {
            Ok(buf) => return Ok(buf),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "rendezvous: rank {} could not get the id from rank 0 at {target} within {} s",
                        launch.rank,
                        timeout.as_secs()
                    )
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// One peer at rank 0: reads its hello (magic, rank, world size), checks it, sends the payload;
/// returns the peer's rank.
fn serve(mut s: TcpStream, launch: &Launch, payload: &[u8]) -> anyhow::Result<usize> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut hello = [0u8; 16];
    s.read_exact(&mut hello).context("reading its hello")?;
    ensure!(&hello[..8] == MAGIC, "not an ikol-train rank");
    let word = |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
    let (rank, world) = (word(8) as usize, word(12) as usize);
    ensure!(
        world == launch.world_size,
        "rank {rank} has WORLD_SIZE {world}, rank 0 has {}",
        launch.world_size
    );
    ensure!(rank > 0 && rank < world, "rank {rank} is out of range");
    s.write_all(&(payload.len() as u32).to_le_bytes())?;
    s.write_all(payload)?;
    Ok(rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn reads_torchrun_and_slurm_environments() -> anyhow::Result<()> {
        assert_eq!(Launch::from_vars(vars(&[]))?, None);
        assert_eq!(
            Launch::from_vars(vars(&[("WORLD_SIZE", "1"), ("RANK", "0")]))?,
            None
        );
        let torchrun = vars(&[
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        let l = Launch::from_vars(torchrun)?.context("a launch")?;
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.port),
            (5, 8, 1, 29501)
        );
        // A batch script's shell (SLURM_NTASKS, SLURM_PROCID=0, no srun step): no launch.
        let batch_shell = vars(&[("SLURM_NTASKS", "16"), ("SLURM_PROCID", "0")]);
        assert_eq!(Launch::from_vars(batch_shell)?, None);
        let slurm = vars(&[
            ("SLURM_STEP_NUM_TASKS", "16"),
            ("SLURM_PROCID", "9"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "gpu-017"),
            ("MASTER_PORT", "29400"),
        ]);
        let l = Launch::from_vars(slurm)?.context("a launch")?;
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.port),
            (9, 16, 1, 29400)
        );
        assert_eq!(l.master_addr, "gpu-017");
        for bad in [
            vars(&[
                ("WORLD_SIZE", "2"),
                ("RANK", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "1"),
            ]),
            vars(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1")]),
            vars(&[("WORLD_SIZE", "two")]),
            vars(&[
                ("WORLD_SIZE", "2"),
                ("RANK", "0"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "x"),
            ]),
        ] {
            assert!(Launch::from_vars(bad).is_err());
        }
        Ok(())
    }

    #[test]
    fn rank0_hands_its_payload_to_every_rank_over_tcp() -> anyhow::Result<()> {
        // A free port: bind to 0, read it, let it go.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let world = 4;
        let payload: Vec<u8> = (0..128u8).collect();
        // Something else knocks first: rank 0 ignores it.
        let stray = std::thread::spawn(move || {
            for _ in 0..100 {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let hs: Vec<_> = (0..world)
            .rev() // the others start before rank 0 and must retry
            .map(|rank| {
                let launch = Launch {
                    rank,
                    world_size: world,
                    local_rank: rank,
                    master_addr: "localhost".into(),
                    port,
                };
                let p = payload.clone();
                std::thread::spawn(move || {
                    share_from_rank0(
                        &launch,
                        (rank == 0).then_some(&p[..]),
                        Duration::from_secs(30),
                    )
                })
            })
            .collect();
        for h in hs {
            let got = h.join().map_err(|_| anyhow::anyhow!("panicked"))??;
            assert_eq!(got, payload);
        }
        stray.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        Ok(())
    }
}
