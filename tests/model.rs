//! A randomized model test: millions of register / unregister / kmap / kunmap / device-free
//! operations on the library, each checked against a plain reference model (a BTreeMap of
//! ranges and a list of held addresses). Every translation, every error and every overlap
//! decision must agree. Addresses are synthetic: the core never dereferences them.

use std::collections::BTreeMap;

use pfn::space::{kmap_len, virt_to_phys};
use pfn::{kmap, kunmap, Device, Error, Pfn};

const PAGE: u64 = 4096;
/// The physical window the operations aim at: small, so that overlaps and hits are common.
const WINDOW_PAGES: u64 = 1 << 16;
const PHYS_BASE: u64 = 1 << 44;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
struct ModelRange {
    last_pfn: u64,
    base: usize,
    device: usize,
}

#[derive(Default)]
struct Model {
    /// By first pfn.
    ranges: BTreeMap<u64, ModelRange>,
    held: Vec<usize>,
}

impl Model {
    fn find(&self, pfn: u64) -> Option<(u64, ModelRange)> {
        let (&first, r) = self.ranges.range(..=pfn).next_back()?;
        (r.last_pfn >= pfn).then_some((first, *r))
    }
    fn overlaps(&self, first: u64, last: u64) -> bool {
        self.ranges
            .range(..=last)
            .next_back()
            .is_some_and(|(_, r)| r.last_pfn >= first)
    }
}

/// Sizes that mix single pages, unaligned runs and whole aligned blocks.
fn random_len(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => 1,
        1 => 1 + rng.below(700),
        2 => 512,
        _ => 512 * (1 + rng.below(4)),
    }
}

fn run(seed: u64, steps: usize) -> [usize; 6] {
    let mut rng = Rng(seed);
    let mut devices: Vec<Device> = (0..4).map(|_| Device::new().unwrap()).collect();
    let mut model = Model::default();
    let mut counts = [0usize; 6]; // register ok, busy, unregister ok, kmap hit, miss, kunmap
    for _ in 0..steps {
        match rng.below(100) {
            // register
            0..=19 => {
                let first = PHYS_BASE / PAGE + rng.below(WINDOW_PAGES);
                let len = random_len(&mut rng);
                let last = first + len - 1;
                let dev = rng.below(devices.len() as u64) as usize;
                // Synthetic, page-aligned, distinct per range start.
                let base = 0x1000_0000_0000usize + (first as usize) * 4096 * 2;
                let want = if model.overlaps(first, last) {
                    Err(Error::Busy)
                } else {
                    Ok(())
                };
                let got = devices[dev].register(first * PAGE, last * PAGE + PAGE - 1, base);
                assert_eq!(got, want, "register {first:#x}..={last:#x}");
                if got.is_ok() {
                    model.ranges.insert(
                        first,
                        ModelRange {
                            last_pfn: last,
                            base,
                            device: dev,
                        },
                    );
                    counts[0] += 1;
                } else {
                    counts[1] += 1;
                }
            }
            // unregister: an existing start (by its owner or another device) or a random one
            20..=29 => {
                let dev = rng.below(devices.len() as u64) as usize;
                let start = if rng.below(2) == 0 && !model.ranges.is_empty() {
                    let k = rng.below(model.ranges.len() as u64) as usize;
                    *model.ranges.keys().nth(k).unwrap()
                } else {
                    PHYS_BASE / PAGE + rng.below(WINDOW_PAGES)
                };
                let owned = model.ranges.get(&start).is_some_and(|r| r.device == dev);
                let want = if !model.held.is_empty() {
                    Err(Error::Deadlock)
                } else if owned {
                    Ok(())
                } else {
                    Err(Error::NotFound)
                };
                assert_eq!(devices[dev].unregister(start * PAGE), want);
                if want.is_ok() {
                    model.ranges.remove(&start);
                    counts[2] += 1;
                }
            }
            // kmap, keeping some held
            30..=79 => {
                // Half aimed inside a registered range (ends included), half anywhere.
                let pfn = if rng.below(2) == 0 && !model.ranges.is_empty() {
                    let k = rng.below(model.ranges.len() as u64) as usize;
                    let (&first, r) = model.ranges.iter().nth(k).unwrap();
                    first + rng.below(r.last_pfn - first + 2)
                } else {
                    PHYS_BASE / PAGE + rng.below(WINDOW_PAGES + 1024)
                };
                let flags = [
                    0,
                    pfn::encoding::DEV,
                    pfn::encoding::MAP | pfn::encoding::SPECIAL,
                ][rng.below(3) as usize];
                let want = model
                    .find(pfn)
                    .map(|(first, r)| r.base + ((pfn - first) * PAGE) as usize);
                let with_len = rng.below(4) == 0;
                let got = if with_len {
                    kmap_len(Pfn::new(pfn, flags)).map(|m| {
                        // Ranges here never continue each other virtually: the length runs
                        // to the range's end.
                        let (first, r) = model.find(pfn).unwrap();
                        assert_eq!(m.len, (r.last_pfn - pfn + 1) * PAGE, "len at {pfn:#x}");
                        let _ = first;
                        m.addr
                    })
                } else {
                    kmap(Pfn::new(pfn, flags))
                };
                match want {
                    Some(addr) => {
                        assert_eq!(got, Ok(addr), "kmap {pfn:#x}");
                        // Reverse translation names the same byte.
                        assert_eq!(
                            virt_to_phys(addr + 5),
                            Ok((pfn * PAGE + 5, pfn::encoding::DEV))
                        );
                        counts[3] += 1;
                        if rng.below(4) == 0 {
                            model.held.push(addr);
                        } else {
                            assert!(kunmap(addr));
                        }
                    }
                    None => {
                        assert_eq!(got, Err(Error::NotMapped), "kmap {pfn:#x}");
                        counts[4] += 1;
                    }
                }
            }
            // kunmap: a held address (any order) or a foreign one
            80..=94 => {
                if !model.held.is_empty() && rng.below(4) != 0 {
                    let i = rng.below(model.held.len() as u64) as usize;
                    let addr = model.held.swap_remove(i);
                    assert!(kunmap(addr + rng.below(4096) as usize));
                    counts[5] += 1;
                } else {
                    let foreign = 0x2000_0000_0000usize + (rng.below(1 << 20) as usize) * 4096;
                    assert!(!kunmap(foreign));
                }
            }
            // free a device (all its ranges)
            _ => {
                let dev = rng.below(devices.len() as u64) as usize;
                let want = if model.held.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Deadlock)
                };
                assert_eq!(devices[dev].kill(), want);
                if want.is_ok() {
                    model.ranges.retain(|_, r| r.device != dev);
                    // A freed device is dead: registering on it fails. Use a new one.
                    assert_eq!(
                        devices[dev].register(PHYS_BASE, PHYS_BASE + PAGE - 1, 0x1000),
                        Err(Error::Invalid)
                    );
                    devices[dev] = Device::new().unwrap();
                }
                assert_eq!(
                    devices[dev].range_count(),
                    model.ranges.values().filter(|r| r.device == dev).count()
                );
            }
        }
    }
    for addr in model.held.drain(..) {
        assert!(kunmap(addr));
    }
    for d in &devices {
        d.kill().unwrap();
    }
    counts
}

#[test]
fn library_agrees_with_the_model() {
    let steps: usize = std::env::var("PFN_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let counts = run(0x1234_5678_9ABC_DEF1, steps);
    eprintln!(
        "model: {steps} operations: {} registered, {} refused as overlapping, {} unregistered, \
         {} kmaps translated, {} found nothing, {} held kmaps released later",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "every kind of operation happened: {counts:?}"
    );
}
