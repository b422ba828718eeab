"""The gateway's storage servers: iSCSI (tgt), SMB (Samba), NFS (ganesha).

* tgtd on GATEWAY:3260 with ISCSI_TARGET open to all, and a second
  tgtd on GATEWAY_CHAP:3260 whose target and discovery both need CHAP;
  each has its control socket in its own directory (TGT_IPC_SOCKET),
  so neither meets another tgtd on the machine.
* smbd on GATEWAY (SMB2/3) and on GATEWAY_SMB1 (NT1 only), ports 445
  and 139, one guest share each; private /run and /var/log, as for
  nmbd (see `storage_conf.samba_dirs`).
* rpcbind and nfs-ganesha sharing a private /run (rpcbind's socket and
  lock live there, so a host rpcbind or another lab is never touched);
  ganesha starts one stage later, once rpcbind answers.

Limits: tgt 1.0.85 answers a SendTargets text request on a connection
that never logged in, CHAP or not, so GATEWAY_CHAP's target name leaks
to a client that skips the login.  nmap 7.93's iscsi-info does: tgt
rejects its login request (no Immediate bit), nmap goes on regardless
and reports the CHAP target as "NOT required".

rpcbind listens on TCP 111 on every server address (it has no option
to narrow TCP; hence the impostor's own namespace).  Its UDP sockets
follow ``-h``: GATEWAY with NFS_UDP, else only loopback, named as
127.0.0.2 because ``-h 127.0.0.1`` makes rpcbind 1.2.6 abort (double
free).
"""

from __future__ import annotations

import os

from . import storage_conf, topology
from .builder import Builder
from .procs import Daemon

BINARIES = ("tgtd", "tgtadm", "smbd", "rpcbind", "ganesha.nfsd")
LUN_BYTES = 4 * 1024 * 1024


def _octet(address: str) -> str:
    return address.rsplit(".", 1)[1]


def _tgtd(b: Builder, address: str, target: str, *, chap: bool) -> None:
    name = f"tgtd-{_octet(address)}"
    home = b.dir(name)
    lun = home / "lun1.img"
    # Sparse: a few MiB of address space, no blocks written.
    with lun.open("wb") as handle:
        os.truncate(handle.fileno(), LUN_BYTES)
    env = {"TGT_IPC_SOCKET": str(home / "socket")}
    tgtadm = b.bins["tgtadm"]
    pid_file = str(home / "tgtd.pid")
    argv = [b.bins["tgtd"], "-f", "-p", pid_file, "--iscsi", f"portal={address}:3260"]
    stop = tuple(tuple(c) for c in storage_conf.tgt_stop(tgtadm))
    b.add(Daemon(name, argv, pid_file, b.log(name), env, stop_cmds=stop))
    # The first command waits for the control socket.
    b.step(name, [tgtadm, "--mode", "sys", "--op", "show"], env, retry=True)
    commands = storage_conf.tgt_target(tgtadm, target, lun)
    if chap:
        commands += storage_conf.tgt_chap(tgtadm)
    for command in commands:
        b.step(name, command, env)
    b.check(name, "tcp", address, 3260)


def iscsi(b: Builder) -> None:
    """tgtd without CHAP on GATEWAY, with CHAP on GATEWAY_CHAP."""
    _tgtd(b, topology.GATEWAY, topology.ISCSI_TARGET, chap=False)
    _tgtd(b, topology.GATEWAY_CHAP, topology.ISCSI_CHAP_TARGET, chap=True)


def _smbd(b: Builder, address: str, *, smb1_only: bool) -> None:
    name = f"smbd-{_octet(address)}"
    home = b.dir(name)
    binds = storage_conf.samba_dirs(home)
    share = b.dir(name, "share")
    (share / "README.txt").write_text("sgw-reach lab share\n")
    conf = b.conf(name, storage_conf.smbd(home, address, share, smb1_only=smb1_only))
    # --no-process-group: at shutdown smbd signals its process group.
    argv = [
        b.bins["smbd"],
        "-F",
        "--no-process-group",
        "--debug-stdout",
        "-s",
        str(conf),
    ]
    b.add(Daemon(name, argv, str(conf), b.log(name), binds=binds))
    for port in (445, 139):
        b.check(name, "tcp", address, port)


def smb(b: Builder) -> None:
    """smbd speaking SMB2/3 on GATEWAY and SMB1 only on GATEWAY_SMB1."""
    _smbd(b, topology.GATEWAY, smb1_only=False)
    _smbd(b, topology.GATEWAY_SMB1, smb1_only=True)


def nfs(b: Builder) -> None:
    """rpcbind (stage 0) and nfs-ganesha (stage 1) on GATEWAY."""
    home = b.dir("nfs")
    run = b.dir("nfs", "run")
    export = b.dir("nfs", "export")
    b.dir("nfs", "recovery")
    (export / "README.txt").write_text("sgw-reach lab export\n")
    binds = ((str(run), "/run"),)
    udp_on = topology.GATEWAY if topology.NFS_UDP else "127.0.0.2"
    argv = [b.bins["rpcbind"], "-f", "-h", udp_on]
    # rpcbind's argv names no lab file: its environment carries the
    # marker.
    b.add(Daemon("rpcbind", argv, str(run), b.log("rpcbind"), binds=binds))
    b.check("rpcbind", "tcp", topology.GATEWAY, 111)
    conf = b.conf("ganesha", storage_conf.ganesha(home, export, udp=topology.NFS_UDP))
    argv = [
        b.bins["ganesha.nfsd"],
        "-F",
        "-L",
        "STDOUT",
        "-f",
        str(conf),
        "-p",
        str(home / "ganesha.pid"),
    ]
    b.add(Daemon("ganesha", argv, str(conf), b.log("ganesha"), stage=1, binds=binds))
    for port in (2049, 20048):
        b.check("ganesha", "tcp", topology.GATEWAY, port)
        b.check("ganesha", "portmap", topology.GATEWAY, port)
