//! The balancing policies measured over real connections: weights, least connections, and
//! client affinity by rendezvous hashing, across a reload that removes a member.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;

use super::*;

#[test]
fn weights_three_to_one_split_four_thousand_clients_within_ten_percent() {
    const CLIENTS: usize = 4000;
    let a = Named::listening("a");
    let b = Named::listening("b");
    let run = Running::start(&format!(
        "route 127.0.0.1:0 {}*3,{}\n",
        s(a.addr()),
        s(b.addr())
    ));
    let routes = get_json(run.admin, "/routes");
    let weights: Vec<Value> = [a.addr(), b.addr()]
        .iter()
        .map(|addr| member_at(&routes, *addr).expect("a member")["weight"].clone())
        .collect();
    assert_eq!(weights, [3, 1], "{routes:#}");
    let to_a = reached_by(run.router.addr, CLIENTS)
        .iter()
        .filter(|name| *name == "a")
        .count();
    let expected = CLIENTS * 3 / 4;
    assert!(
        to_a.abs_diff(expected) <= expected / 10,
        "{to_a} of {CLIENTS} clients reached the upstream of weight 3, wanted {expected} ± 10 %"
    );
}

/// An upstream that sends its name and holds the connection until the client ends it.
fn holding(name: &'static str) -> Upstream {
    upstream(move |mut stream| {
        let _ = stream.write_all(name.as_bytes());
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    })
}

/// A client through `router` that stays open, and the name of the upstream it reached.
fn held_client(router: SocketAddr) -> (TcpStream, String) {
    let mut client = connect(router);
    let name = String::from_utf8(read_exact(&mut client, 1)).unwrap();
    (client, name)
}

#[test]
fn least_connections_sends_new_clients_to_the_upstream_with_fewer_open_connections() {
    let a = holding("a");
    let b = holding("b");
    let run = Running::start(&format!(
        "route 127.0.0.1:0 {},{} balance=leastconn\n",
        s(a.addr),
        s(b.addr)
    ));
    let active = |addr: SocketAddr| {
        member_at(&get_json(run.admin, "/routes"), addr).expect("a member")["active"].clone()
    };
    // Ties go to the first in order: a, b, a, b, a, b.
    let first: Vec<(TcpStream, String)> = (0..6).map(|_| held_client(run.router.addr)).collect();
    let names: Vec<&str> = first.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "a", "b", "a", "b"]);
    let (on_a, on_b): (Vec<_>, Vec<_>) = first.into_iter().partition(|(_, n)| n == "a");
    drop(on_b);
    wait_until("b's connections closed in the router", || {
        active(b.addr) == 0 && active(a.addr) == 3
    });
    // a holds three, b none: the next three go to b; then a tie, which a wins.
    let next: Vec<(TcpStream, String)> = (0..4).map(|_| held_client(run.router.addr)).collect();
    let names: Vec<&str> = next.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["b", "b", "b", "a"]);
    drop(on_a);
}

/// The client addresses of the affinity test: 127.0.x.y, none of them 127.0.0.1.
fn client_ips(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 0, 10 + (i / 200) as u8, 1 + (i % 200) as u8))
        .collect()
}

/// The upstream each client address reaches, connecting from it.
fn reached_from(router: SocketAddr, ips: &[Ipv4Addr]) -> Vec<String> {
    ips.iter()
        .map(|ip| {
            let mut client = connect_from_ip(*ip, router);
            let mut name = String::new();
            client
                .read_to_string(&mut name)
                .expect("the upstream's name");
            name
        })
        .collect()
}

#[test]
fn source_affinity_maps_each_client_stably_and_a_removed_member_moves_only_its_clients() {
    const CLIENTS: usize = 200;
    let [a, b, c] = ["a", "b", "c"].map(Named::listening);
    let config = |members: &[&Named]| {
        let list: Vec<String> = members.iter().map(|m| s(m.addr())).collect();
        format!("route 127.0.0.1:0 {} balance=source\n", list.join(","))
    };
    let mut run = Running::start(&config(&[&a, &b, &c]));
    let ips = client_ips(CLIENTS);
    let before = reached_from(run.router.addr, &ips);
    assert_eq!(
        reached_from(run.router.addr, &ips),
        before,
        "each client reaches the same upstream twice"
    );
    let mut shares = BTreeMap::new();
    for name in &before {
        *shares.entry(name.as_str()).or_insert(0) += 1;
    }
    assert_eq!(shares.len(), 3, "every member has clients: {shares:?}");

    run.reload(&config(&[&a, &b]));
    let after = reached_from(run.router.addr, &ips);
    let mut moved = 0;
    for ((ip, was), is) in ips.iter().zip(&before).zip(&after) {
        if was == "c" {
            moved += 1;
            assert_ne!(is, "c", "{ip} still reaches the removed member");
        } else {
            assert_eq!(is, was, "{ip} moved from {was}, which was kept");
        }
    }
    let share = moved as f64 / CLIENTS as f64;
    assert!(
        (0.20..=0.47).contains(&share),
        "{moved} of {CLIENTS} clients moved; about a third should: {shares:?}"
    );
}
