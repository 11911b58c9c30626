//! The kube-ipvs0 dummy device: every Service address IPVS answers for is bound to it,
//! so the kernel treats packets to them as local and hands them to IPVS. The device
//! stays down, as upstream leaves it: addresses on a down dummy are still local.

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::{Handle, LinkDummy};
use std::collections::BTreeSet;
use std::net::IpAddr;
use tokio::runtime::Runtime;

pub const DUMMY_DEVICE: &str = "kube-ipvs0";
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct LinkError {
    pub what: String,
    pub message: String,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn link_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError {
        what,
        message: e.to_string(),
    }
}

fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

/// rtnetlink in the network namespace this was made in (sockets keep their netns).
/// It owns a small current-thread runtime because syncs run on a blocking thread;
/// its methods must not be called from async code (they block on that runtime).
pub struct Links {
    rt: Option<Runtime>,
    handle: Handle,
}

/// The proxier may be dropped by async code (the proxy's main loop): shutting the
/// runtime down in the background does not block there, as a plain drop would.
impl Drop for Links {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Links {
    pub fn open() -> Result<Self, LinkError> {
        let err = |e: std::io::Error| LinkError {
            what: "opening an rtnetlink socket".into(),
            message: e.to_string(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(err)?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(err)?
        };
        rt.spawn(conn);
        Ok(Links {
            rt: Some(rt),
            handle,
        })
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }

    fn index(&self, name: &str) -> Result<Option<u32>, LinkError> {
        let found = self.block(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next(),
        );
        match found {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(link_err(format!("looking up link {name}"))(e)),
        }
    }

    /// The dummy device's index, creating it if needed.
    pub fn ensure_dummy(&self) -> Result<u32, LinkError> {
        if let Some(i) = self.index(DUMMY_DEVICE)? {
            return Ok(i);
        }
        match self.block(
            self.handle
                .link()
                .add(LinkDummy::new(DUMMY_DEVICE).build())
                .execute(),
        ) {
            Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                return Err(LinkError {
                    what: format!("creating dummy device {DUMMY_DEVICE}"),
                    message: format!(
                        "{e}: the kernel has no dummy network driver (load the dummy kernel module, e.g. `modprobe dummy`)"
                    ),
                });
            }
            Err(e) if errno(&e) != Some(EEXIST) => {
                return Err(link_err(format!("creating dummy device {DUMMY_DEVICE}"))(e));
            }
            _ => {}
        }
        self.index(DUMMY_DEVICE)?.ok_or_else(|| LinkError {
            what: format!("creating dummy device {DUMMY_DEVICE}"),
            message: "the device is not there after creation".into(),
        })
    }

    pub fn delete_dummy(&self) -> Result<(), LinkError> {
        let Some(index) = self.index(DUMMY_DEVICE)? else {
            return Ok(());
        };
        match self.block(self.handle.link().del(index).execute()) {
            Err(e) if errno(&e) != Some(ENODEV) => {
                Err(link_err(format!("deleting {DUMMY_DEVICE}"))(e))
            }
            _ => Ok(()),
        }
    }

    fn address_messages(&self, index: Option<u32>) -> Result<Vec<AddressMessage>, LinkError> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = self
            .block(req.execute().try_collect())
            .map_err(link_err("listing addresses"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| index.is_none_or(|i| m.header.index == i))
            .collect())
    }

    /// Addresses bound to link `index`.
    pub fn addresses(&self, index: u32) -> Result<BTreeSet<IpAddr>, LinkError> {
        Ok(self
            .address_messages(Some(index))?
            .iter()
            .filter_map(address_of)
            .collect())
    }

    /// Every address of the namespace except those on link `except`: the node's own.
    pub fn node_addresses(&self, except: Option<u32>) -> Result<BTreeSet<IpAddr>, LinkError> {
        Ok(self
            .address_messages(None)?
            .iter()
            .filter(|m| Some(m.header.index) != except)
            .filter_map(address_of)
            .collect())
    }

    /// Binds `ip` as a host address (/32, /128) to link `index`; already bound is fine.
    pub fn bind(&self, index: u32, ip: IpAddr) -> Result<(), LinkError> {
        let prefix = if ip.is_ipv6() { 128 } else { 32 };
        let mut req = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            // Usable at once, not tentative while duplicate address detection runs.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match self.block(req.execute()) {
            Err(e) if errno(&e) != Some(EEXIST) => {
                Err(link_err(format!("binding {ip} to {DUMMY_DEVICE}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes `ip` from link `index`; not bound is fine.
    pub fn unbind(&self, index: u32, ip: IpAddr) -> Result<(), LinkError> {
        let found = self
            .address_messages(Some(index))?
            .into_iter()
            .find(|m| address_of(m) == Some(ip));
        let Some(m) = found else { return Ok(()) };
        match self.block(self.handle.address().del(m).execute()) {
            Err(e) if errno(&e) != Some(EADDRNOTAVAIL) => {
                Err(link_err(format!("unbinding {ip} from {DUMMY_DEVICE}"))(e))
            }
            _ => Ok(()),
        }
    }
}
