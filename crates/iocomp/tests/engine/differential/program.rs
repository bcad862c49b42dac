//! The programs: their generators, and the programs that once found a defect.

use super::*;

pub(super) fn send_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..64,
        3 => 1024usize..65536,
        2 => 200_000usize..1_500_000,
        1 => 3_000_000usize..8_000_000,
    ]
}

/// Steps any thread may run: they submit, post or cancel, and never wait.
pub(super) fn leaf() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u64>(), any::<u64>()).prop_map(|(key, bytes)| Step::Post { key, bytes }),
        5 => (0usize..2, send_len()).prop_map(|(sock, len)| Step::Send { sock, len }),
        3 => (0usize..2, 1usize..9000, any::<bool>())
            .prop_map(|(sock, cap, pooled)| Step::Recv { sock, cap, pooled }),
        3 => (0usize..2, 1usize..6000).prop_map(|(sock, len)| Step::PeerWrite { sock, len }),
        4 => prop_oneof![
            1 => Just(Dur::Zero),
            4 => any::<u8>().prop_map(Dur::Ms),
            2 => Just(Dur::Hour),
            1 => Just(Dur::Max),
        ]
        .prop_map(Step::Timeout),
        2 => (
            0usize..2,
            prop_oneof![
                Just(0u64),
                0..FILE_LEN,
                Just(FILE_LEN),
                Just(FILE_LEN + 100)
            ],
            prop_oneof![Just(0u64), 1u64..100_000, Just(FILE_LEN)],
            0usize..300,
            0usize..300
        )
            .prop_map(|(sock, off, len, head, tail)| Step::Transmit { sock, off, len, head, tail }),
        2 => prop_oneof![3 => Just(true), 1 => Just(false)].prop_map(|live| Step::Connect { live }),
        1 => Just(Step::Accept),
        4 => (any::<usize>(), any::<bool>())
            .prop_map(|(target, other_thread)| Step::Cancel { target, other_thread }),
        1 => Just(Step::CancelPosted),
    ]
}

pub(super) fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        3 => Just(Wait::Zero),
        4 => any::<u8>().prop_map(Wait::Ms),
        1 => Just(Wait::Max),
    ]
}

pub(super) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => leaf(),
        8 => wait().prop_map(Step::Get),
        3 => (1usize..8, wait()).prop_map(|(max, wait)| Step::GetMany { max, wait }),
        1 => Just(Step::Attach),
        2 => Just(Step::Detach),
        3 => (any::<bool>(), any::<bool>(), prop::collection::vec(leaf(), 1..6))
            .prop_map(|(attach, detach, steps)| Step::Thread { attach, detach, steps }),
        1 => Just(Step::LifoProbe),
        1 => Just(Step::Close),
    ]
}

pub(super) fn program() -> impl Strategy<Value = Program> {
    (
        prop_oneof![Just(1usize), Just(2), Just(4)],
        any::<bool>(),
        1usize..=2,
        any::<bool>(),
        prop::collection::vec(step(), 1..32),
    )
        .prop_map(|(concurrency, strict, socks, slow_reader, steps)| Program {
            concurrency,
            strict,
            socks,
            slow_reader,
            steps,
        })
}

/// The programs that found defects (shrunk by the random test, or the
/// issue's own reproductions), each with what it checks.
pub(super) fn known_programs() -> Vec<(&'static str, Program)> {
    let p = |steps: Vec<Step>| Program {
        concurrency: 2,
        strict: false,
        socks: 1,
        slow_reader: false,
        steps,
    };
    let thread = |attach: bool, steps: Vec<Step>| Step::Thread {
        attach,
        detach: false,
        steps,
    };
    let send = |len: usize| Step::Send { sock: 0, len };
    let recv = || Step::Recv {
        sock: 0,
        cap: 1,
        pooled: false,
    };
    let transmit = Step::Transmit {
        sock: 0,
        off: 0,
        len: 0,
        head: 0,
        tail: 0,
    };
    vec![
        (
            "issue 14 item 1: two big sends on one socket keep their order",
            p(vec![
                send(8 << 20),
                send(8 << 20),
                Step::Get(Wait::Ms(29)),
                Step::Get(Wait::Ms(29)),
                send(8 << 20),
                send(8 << 20),
                send(8 << 20),
                send(8 << 20),
            ]),
        ),
        (
            "issue 14 item 3: a new thread's first id is not a detached thread's",
            p(vec![
                thread(true, vec![Step::Timeout(Dur::Zero)]),
                thread(true, vec![Step::Timeout(Dur::Zero)]),
                Step::Send { sock: 0, len: 1 },
                Step::Detach,
                Step::Get(Wait::Ms(1)),
                Step::Send { sock: 0, len: 1 },
            ]),
        ),
        (
            "issue 14 item 4: get(Some(Duration::MAX)) with a packet queued",
            p(vec![Step::Post { key: 0, bytes: 0 }, Step::Get(Wait::Max)]),
        ),
        (
            "issue 14 item 10: Timeout(Duration::MAX) succeeds or is cancelled, alike on both",
            p(vec![Step::Timeout(Dur::Max), Step::Get(Wait::Ms(5))]),
        ),
        (
            "a transmit then a send on one socket keep their order",
            p(vec![transmit.clone(), send(1)]),
        ),
        (
            "a send handed over by another thread, then a send of this thread, keep their order",
            p(vec![thread(false, vec![send(1)]), send(1)]),
        ),
        (
            "a send of this thread, then a transmit of another attached thread, keep their order",
            p(vec![send(1), thread(true, vec![transmit.clone()])]),
        ),
        (
            "two receives on one socket take the bytes in submission order",
            p(vec![
                recv(),
                recv(),
                Step::Get(Wait::Zero),
                Step::PeerWrite { sock: 0, len: 2 },
            ]),
        ),
        (
            "a receive handed over, then one of another attached thread, take the bytes in order",
            p(vec![
                Step::PeerWrite { sock: 0, len: 1 },
                thread(false, vec![recv()]),
                thread(true, vec![recv()]),
            ]),
        ),
    ]
}
