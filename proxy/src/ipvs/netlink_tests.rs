//! The IPVS messages byte for byte, and replies shaped as the kernel sends them
//! (net/netfilter/ipvs/ip_vs_ctl.c: attribute order, the HASHED flag, nested stats).
//! Multi-byte fields other than addresses and ports are host order, so the literal
//! bytes below are for little-endian machines.
#![cfg(target_endian = "little")]

use super::*;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn nlhdr(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
    cat(&[
        &len.to_le_bytes(),
        &ty.to_le_bytes(),
        &flags.to_le_bytes(),
        &seq.to_le_bytes(),
        &[0, 0, 0, 0],
    ])
}

fn vs() -> VirtualServer {
    VirtualServer {
        addr: "10.96.0.10".parse().unwrap(),
        protocol: 6,
        port: 80,
        scheduler: "rr".into(),
        flags: SVC_F_PERSISTENT,
        timeout: 10800,
    }
}

const SVC_KEY_V4: &[u8] = &[
    6, 0, 1, 0, 2, 0, 0, 0, // AF_INET
    6, 0, 2, 0, 6, 0, 0, 0, // IPPROTO_TCP
    20, 0, 3, 0, 10, 96, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // address
    6, 0, 4, 0, 0, 80, 0, 0, // port 80, network order
];

#[test]
fn new_service_bytes() {
    let want = cat(&[
        &nlhdr(104, 0x1c, 0x5, 7),
        &[1, 1, 0, 0], // IPVS_CMD_NEW_SERVICE, version 1
        &[84, 0, 1, 0x80],
        SVC_KEY_V4,
        &[7, 0, 6, 0, b'r', b'r', 0, 0],
        &[12, 0, 7, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], // flags persistent, mask all
        &[8, 0, 8, 0, 0x30, 0x2a, 0, 0],                    // timeout 10800
        &[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff],              // netmask /32
    ]);
    assert_eq!(service(0x1c, 7, Command::NewService, &vs()), want);
}

#[test]
fn delete_service_carries_only_the_key() {
    let want = cat(&[
        &nlhdr(68, 0x1c, 0x5, 8),
        &[3, 1, 0, 0],
        &[48, 0, 1, 0x80],
        SVC_KEY_V4,
    ]);
    assert_eq!(service(0x1c, 8, Command::DelService, &vs()), want);
}

#[test]
fn new_and_delete_dest_bytes() {
    let rs = RealServer {
        addr: "10.244.1.2".parse().unwrap(),
        port: 8080,
        weight: 1,
    };
    let dest_key: &[u8] = &[
        20, 0, 1, 0, 10, 244, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // address
        6, 0, 2, 0, 0x1f, 0x90, 0, 0, // port 8080
    ];
    let want = cat(&[
        &nlhdr(140, 0x1c, 0x5, 9),
        &[5, 1, 0, 0],
        &[48, 0, 1, 0x80],
        SVC_KEY_V4,
        &[72, 0, 2, 0x80],
        dest_key,
        &[8, 0, 3, 0, 0, 0, 0, 0],  // IP_VS_CONN_F_MASQ
        &[8, 0, 4, 0, 1, 0, 0, 0],  // weight 1
        &[8, 0, 5, 0, 0, 0, 0, 0],  // upper threshold
        &[8, 0, 6, 0, 0, 0, 0, 0],  // lower threshold
        &[6, 0, 11, 0, 2, 0, 0, 0], // AF_INET
    ]);
    assert_eq!(dest(0x1c, 9, Command::NewDest, &vs(), &rs), want);
    let want = cat(&[
        &nlhdr(100, 0x1c, 0x5, 10),
        &[7, 1, 0, 0],
        &[48, 0, 1, 0x80],
        SVC_KEY_V4,
        &[32, 0, 2, 0x80],
        dest_key,
    ]);
    assert_eq!(dest(0x1c, 10, Command::DelDest, &vs(), &rs), want);
}

#[test]
fn v6_service_key_and_netmask() {
    let v6 = VirtualServer {
        addr: "fd00::a".parse().unwrap(),
        ..vs()
    };
    let m = service(0x1c, 1, Command::SetService, &v6);
    assert_eq!(m[16], Command::SetService as u8);
    assert_eq!(&m[24..32], &[6, 0, 1, 0, 10, 0, 0, 0], "AF_INET6");
    let mut addr = vec![20, 0, 3, 0, 0xfd];
    addr.extend_from_slice(&[0; 14]);
    addr.push(0xa);
    assert_eq!(&m[40..60], addr.as_slice());
    assert!(m.ends_with(&[8, 0, 9, 0, 128, 0, 0, 0]), "netmask 128");
}

#[test]
fn dumps_and_config_bytes() {
    assert_eq!(
        list_services(0x1c, 3),
        cat(&[&nlhdr(20, 0x1c, 0x301, 3), &[4, 1, 0, 0]])
    );
    assert_eq!(
        list_dests(0x1c, 4, &vs()),
        cat(&[
            &nlhdr(68, 0x1c, 0x301, 4),
            &[8, 1, 0, 0],
            &[48, 0, 1, 0x80],
            SVC_KEY_V4
        ])
    );
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(
        set_timeouts(0x1c, 5, t),
        cat(&[
            &nlhdr(44, 0x1c, 0x5, 5),
            &[12, 1, 0, 0],
            &[8, 0, 4, 0, 0x84, 0x03, 0, 0],
            &[8, 0, 5, 0, 120, 0, 0, 0],
            &[8, 0, 6, 0, 0x2c, 0x01, 0, 0],
        ])
    );
    assert_eq!(
        get_family(1, IPVS_GENL_NAME),
        cat(&[
            &nlhdr(32, 0x10, 0x5, 1),
            &[3, 1, 0, 0],
            &[9, 0, 2, 0, b'I', b'P', b'V', b'S', 0, 0, 0, 0]
        ])
    );
}

/// CTRL_CMD_NEWFAMILY as the kernel answers: name, id, version, header size, max attr, ops.
#[test]
fn family_answer_gives_the_id() {
    let body = cat(&[
        &[1, 2, 0, 0], // CTRL_CMD_NEWFAMILY
        &[9, 0, 2, 0, b'I', b'P', b'V', b'S', 0, 0, 0, 0],
        &[6, 0, 1, 0, 0x23, 0, 0, 0], // family id 0x23
        &[8, 0, 3, 0, 1, 0, 0, 0],
        &[8, 0, 4, 0, 0, 0, 0, 0],
        &[8, 0, 5, 0, 8, 0, 0, 0],
        &[
            20, 0, 6, 0x80, 16, 0, 1, 0x80, 8, 0, 1, 0, 1, 0, 0, 0, 8, 0, 2, 0,
        ],
    ]);
    let mut msg = nlhdr(16 + body.len() as u32, 0x10, 0, 1);
    msg.extend_from_slice(&body);
    assert_eq!(parse_family_id(&msg), Ok(0x23));
}

fn service_reply(seq: u32) -> Vec<u8> {
    let inner = cat(&[
        SVC_KEY_V4,
        &[7, 0, 6, 0, b'r', b'r', 0, 0],
        &[12, 0, 7, 0, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], // persistent | hashed
        &[8, 0, 8, 0, 0x30, 0x2a, 0, 0],
        &[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff],
        // IPVS_SVC_ATTR_STATS: nested counters, ignored.
        &[12, 0, 10, 0x80, 8, 0, 1, 0, 42, 0, 0, 0],
    ]);
    let body = cat(&[
        &[1, 1, 0, 0],
        &(4 + inner.len() as u16).to_le_bytes(),
        &[1, 0x80],
        &inner,
    ]);
    cat(&[&nlhdr(16 + body.len() as u32, 0x1c, 0x2, seq), &body])
}

#[test]
fn service_dump_reply_parses() {
    let got = parse_service(&service_reply(3)).unwrap().unwrap();
    assert_eq!(
        got,
        vs(),
        "the kernel's HASHED flag is not part of the state"
    );
    // A firewall-mark service (no address) is not ours.
    let fwmark = cat(&[
        &nlhdr(16 + 4 + 4 + 32, 0x1c, 0x2, 3),
        &[1, 1, 0, 0],
        &[36, 0, 1, 0x80],
        &[6, 0, 1, 0, 2, 0, 0, 0],
        &[8, 0, 5, 0, 7, 0, 0, 0],
        &[7, 0, 6, 0, b'r', b'r', 0, 0],
        &[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff],
    ]);
    assert_eq!(parse_service(&fwmark), Ok(None));
    // A truncated service is an error, not a panic.
    let mut cut = service_reply(3);
    cut.truncate(30);
    assert!(parse_service(&cut).is_err());
}

#[test]
fn dest_dump_reply_parses_with_connection_counts() {
    let inner: Vec<u8> = cat(&[
        &[20, 0, 1, 0, 10, 244, 1, 2],
        &[0; 12],
        &[6, 0, 2, 0, 0x1f, 0x90, 0, 0],
        &[8, 0, 3, 0, 0, 0, 0, 0],
        &[8, 0, 4, 0, 0, 0, 0, 0], // weight 0: terminating
        &[8, 0, 5, 0, 0, 0, 0, 0],
        &[8, 0, 6, 0, 0, 0, 0, 0],
        &[8, 0, 7, 0, 3, 0, 0, 0], // active
        &[8, 0, 8, 0, 5, 0, 0, 0], // inactive
        &[8, 0, 9, 0, 0, 0, 0, 0],
        &[6, 0, 11, 0, 2, 0, 0, 0],
    ]);
    let body = cat(&[
        &[5, 1, 0, 0],
        &(4 + inner.len() as u16).to_le_bytes(),
        &[2, 0x80],
        &inner,
    ]);
    let msg = cat(&[&nlhdr(16 + body.len() as u32, 0x1c, 0x2, 4), &body]);
    let d = parse_dest(&msg, &vs().addr).unwrap();
    assert_eq!(
        d,
        Destination {
            server: RealServer {
                addr: "10.244.1.2".parse().unwrap(),
                port: 8080,
                weight: 0
            },
            active_conns: 3,
            inactive_conns: 5,
        }
    );
}

#[test]
fn reply_buffers_split_and_carry_errors() {
    let mut buf = service_reply(3);
    buf.extend_from_slice(&service_reply(3));
    // NLMSG_ERROR with -ENOENT, echoing the request header.
    buf.extend_from_slice(&nlhdr(36, NLMSG_ERROR, 0, 3));
    buf.extend_from_slice(&(-2i32).to_le_bytes());
    buf.extend_from_slice(&nlhdr(20, 0x1c, 0x5, 3));
    let r = replies(&buf).unwrap();
    assert_eq!(r.len(), 3);
    assert!(r[..2].iter().all(|m| m.ty == 0x1c && m.seq == 3));
    assert_eq!((r[2].ty, r[2].errno()), (NLMSG_ERROR, 2));
    let mut broken = service_reply(1);
    broken[0] = 200; // longer than the buffer
    assert!(replies(&broken).is_err());
}
