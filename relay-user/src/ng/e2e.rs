//! End to end over loopback: ng server → [`crate::session::Sessions`] → userspace relay, with
//! real RTP both ways. Unprivileged (userspace data plane on 127.0.0.1).

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::NgClient;
use super::engine::Engine;
use super::message::OfferAnswer;
use super::sdp::Sdp;
use super::server::Server;
use crate::dataplane::DataPlane;
use crate::media::Interface;
use crate::relay::UserRelay;
use crate::session::Sessions;

fn body(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
}

fn port_of(sdp: &str) -> u16 {
    Sdp::parse(sdp).unwrap().media[0].port
}

fn exchange(from: &UdpSocket, to: &UdpSocket, relay: SocketAddr, n: usize) -> usize {
    to.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = 0;
    let mut buf = [0u8; 256];
    for i in 0..n {
        let pkt = [i as u8; 172];
        from.send_to(&pkt, relay).unwrap();
        if let Ok((len, _)) = to.recv_from(&mut buf)
            && buf[..len] == pkt
        {
            got += 1;
        }
    }
    got
}

#[test]
fn ng_drives_the_userspace_relay() {
    let dp = Arc::new(DataPlane::userspace("ng e2e test"));
    let relay = Arc::new(UserRelay::start(dp.clone(), 1).unwrap());
    let sessions = Arc::new(Sessions::new(
        dp,
        relay,
        "42300-42319".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ));
    let engine = Arc::new(Mutex::new(Engine::new(
        sessions.clone(),
        vec![Interface::new("lo", &["127.0.0.1".parse().unwrap()])],
    )));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(Server::bind("127.0.0.1:0".parse().unwrap(), engine))
        .unwrap();
    let ng_addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let th = std::thread::spawn(move || {
        rt.block_on(server.run(async {
            let _ = stopped.await;
        }))
    });

    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ng = NgClient::new(ng_addr).unwrap();
    let mut offer = OfferAnswer::new("e2e-1", "ft", &body(caller.local_addr().unwrap().port()));
    offer.flags.strict_source = true;
    let to_callee = ng.offer(&offer).unwrap();
    let mut answer = OfferAnswer::new("e2e-1", "ft", &body(callee.local_addr().unwrap().port()));
    answer.to_tag = Some("tt".into());
    let to_caller = ng.answer(&answer).unwrap();
    let port_a = port_of(&to_caller);
    let port_b = port_of(&to_callee);
    assert!((42300..42320).contains(&port_a) && (42300..42320).contains(&port_b));

    let a: SocketAddr = ([127, 0, 0, 1], port_a).into();
    let b: SocketAddr = ([127, 0, 0, 1], port_b).into();
    assert_eq!(exchange(&caller, &callee, a, 20), 20, "caller → callee");
    assert_eq!(exchange(&callee, &caller, b, 20), 20, "callee → caller");

    // The relay may count a packet just after forwarding it: poll briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let q = loop {
        let q = ng.query("e2e-1").unwrap();
        let n = q
            .get("totals")
            .and_then(|t| t.get("RTP")?.get("packets")?.as_int());
        if n == Some(40) || std::time::Instant::now() > deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let totals = q.get("totals").unwrap().get("RTP").unwrap();
    assert_eq!(totals.get("packets").unwrap().as_int(), Some(40), "{q:?}");
    assert_eq!(totals.get("bytes").unwrap().as_int(), Some(40 * 172));

    ng.delete("e2e-1", None).unwrap();
    assert_eq!(sessions.list().len(), 0);
    assert_eq!(
        exchange(&caller, &callee, a, 1),
        0,
        "relay port closed after delete"
    );
    stop.send(()).unwrap();
    th.join().unwrap().unwrap();
}
