//! Traffic mix: which domain each recipient goes to and how large each
//! message is. Distributions are turned into cumulative tables once, so a
//! draw is one random number and a binary search.

use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::options::{DomainOrder, InjectOptions, SizeSpec};

/// A discrete distribution over `0..n`.
#[derive(Debug, Clone)]
pub(crate) struct Weighted {
    cdf: Vec<f64>,
}

impl Weighted {
    /// Builds from non-negative weights; at least one must be positive.
    pub(crate) fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cdf = weights
            .into_iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        Weighted { cdf }
    }

    pub(crate) fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        if self.cdf.len() <= 1 || total <= 0.0 {
            return 0;
        }
        let u = rng.gen_range(0.0..total);
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Domains and sizes of the generated traffic.
#[derive(Debug)]
pub(crate) struct Mix {
    /// Providers first, then `d0.test` ….
    pub(crate) domains: Vec<String>,
    domain_pick: Weighted,
    order: DomainOrder,
    /// The next synthetic domain under [`DomainOrder::Sequential`], shared
    /// by every connection of the run.
    next: AtomicUsize,
    /// Index of `d0.test` in `domains`.
    first_synthetic: usize,
    /// Message sizes by class.
    pub(crate) sizes: Vec<usize>,
    size_pick: Weighted,
}

impl Mix {
    pub(crate) fn new(opts: &InjectOptions) -> Self {
        let mut domains: Vec<String> = opts
            .providers
            .iter()
            .map(|p| p.domain.to_ascii_lowercase())
            .collect();
        let mut weights: Vec<f64> = opts.providers.iter().map(|p| p.share).collect();
        let rest = (1.0 - weights.iter().sum::<f64>()).max(0.0);
        let synthetic: Vec<f64> = (0..opts.domains)
            .map(|k| {
                let zipf = match opts.zipf {
                    Some(s) => 1.0 / ((k + 1) as f64).powf(s),
                    None => 1.0,
                };
                zipf * opts.domain_weight(k)
            })
            .collect();
        let first_synthetic = domains.len();
        let norm: f64 = synthetic.iter().sum();
        for (k, w) in synthetic.into_iter().enumerate() {
            domains.push(format!("d{k}.test"));
            weights.push(if norm > 0.0 { rest * w / norm } else { 0.0 });
        }
        let (sizes, size_weights): (Vec<usize>, Vec<f64>) = match &opts.size {
            SizeSpec::Fixed(n) => (vec![*n], vec![1.0]),
            SizeSpec::Weighted(entries) => entries.iter().map(|e| (e.bytes, e.weight)).unzip(),
        };
        Mix {
            domains,
            domain_pick: Weighted::new(weights),
            order: opts.domain_order,
            next: AtomicUsize::new(0),
            first_synthetic,
            sizes,
            size_pick: Weighted::new(size_weights),
        }
    }

    pub(crate) fn domain(&self, rng: &mut impl Rng) -> usize {
        let synthetic = self.domains.len() - self.first_synthetic;
        match self.order {
            DomainOrder::Sequential if synthetic > 0 => {
                self.first_synthetic + self.next.fetch_add(1, Ordering::Relaxed) % synthetic
            }
            _ => self.domain_pick.sample(rng),
        }
    }

    pub(crate) fn size_class(&self, rng: &mut impl Rng) -> usize {
        self.size_pick.sample(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn counts(mix: &Mix, n: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut c = vec![0; mix.domains.len()];
        for _ in 0..n {
            c[mix.domain(&mut rng)] += 1;
        }
        c
    }

    #[test]
    fn providers_get_their_share_and_zipf_skews() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.providers = vec!["gmail.test:0.3".parse().unwrap()];
        o.domains = 4;
        o.zipf = Some(1.0);
        let mix = Mix::new(&o);
        assert_eq!(
            mix.domains,
            ["gmail.test", "d0.test", "d1.test", "d2.test", "d3.test"]
        );
        let c = counts(&mix, 100_000);
        let gmail = c[0] as f64 / 100_000.0;
        assert!((0.29..0.31).contains(&gmail), "gmail share {gmail}");
        // Zipf s=1: d0 twice d1, four times d3.
        let r = c[1] as f64 / c[2] as f64;
        assert!((1.9..2.1).contains(&r), "d0/d1 {r}");
        assert!(c[4] > 0);
    }

    #[test]
    fn domain_weights_scale_single_domains() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.providers = vec!["gmail.test:0.5".parse().unwrap()];
        o.domains = 4;
        o.domain_weights = vec!["d1.test:0.1".parse().unwrap(), "d3.test:0".parse().unwrap()];
        o.validate().unwrap();
        let mix = Mix::new(&o);
        let n = 200_000;
        let c = counts(&mix, n);
        // Providers keep their share; the rest splits 1 : 0.1 : 1 : 0.
        let share = |i: usize| c[i] as f64 / n as f64;
        assert!((0.49..0.51).contains(&share(0)), "gmail {}", share(0));
        let unit = 0.5 / 2.1;
        for (i, w) in [(1, 1.0), (2, 0.1), (3, 1.0)] {
            let want = unit * w;
            assert!(
                (share(i) - want).abs() < 0.05 * want,
                "{}: {} vs {want}",
                mix.domains[i],
                share(i)
            );
        }
        assert_eq!(c[4], 0, "weight 0 is never drawn");
    }

    #[test]
    fn sequential_order_visits_every_domain_once_per_round() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.domains = 1000;
        o.domain_order = DomainOrder::Sequential;
        let c = counts(&Mix::new(&o), 3000);
        assert!(c.iter().all(|&n| n == 3), "{c:?}");
    }

    #[test]
    fn uniform_without_zipf() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.domains = 5;
        let c = counts(&Mix::new(&o), 50_000);
        for n in c {
            assert!((9_000..11_000).contains(&n), "{n}");
        }
    }
}
