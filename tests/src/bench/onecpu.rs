//! The HAProxy comparison's second placement: one CPU for everything
//! (client, backends, balancer, all receive processing inline in softirq,
//! no cross-CPU wake-ups), measured against a direct client -> backend run
//! on the same CPU. A balancer's cost per connection is the CPU time per
//! connection with it minus without it.

use super::haproxy::ConnRun;
use super::report::{Report, Stat};

#[derive(Default)]
pub struct Figures {
    direct_per_s: Vec<f64>,
    lb_per_s: Vec<f64>,
    hp_per_s: Vec<f64>,
    /// Busy CPU time per connection (µs) of the one CPU.
    direct_us: Vec<f64>,
    lb_us: Vec<f64>,
    hp_us: Vec<f64>,
}

fn us_per_conn(c: &ConnRun) -> f64 {
    c.bal.busy * 1e6 / c.ok.max(1) as f64
}

impl Figures {
    pub(super) fn add(&mut self, direct: &ConnRun, lb: &ConnRun, hp: &ConnRun) {
        self.direct_per_s.push(direct.per_s);
        self.lb_per_s.push(lb.per_s);
        self.hp_per_s.push(hp.per_s);
        self.direct_us.push(us_per_conn(direct));
        self.lb_us.push(us_per_conn(lb));
        self.hp_us.push(us_per_conn(hp));
    }

    pub fn report(&self, r: &mut Report) {
        let put = |r: &mut Report, k: &str, v: &[f64]| {
            if let Some(s) = Stat::of(v) {
                r.stat(k, s);
            }
        };
        let over = |side: &[f64]| -> Vec<f64> { side.iter().zip(&self.direct_us).map(|(s, d)| s - d).collect() };
        let (lb_over, hp_over) = (over(&self.lb_us), over(&self.hp_us));
        put(r, "onecpu.direct.conn_per_s", &self.direct_per_s);
        put(r, "onecpu.lb.conn_per_s", &self.lb_per_s);
        put(r, "onecpu.haproxy.conn_per_s", &self.hp_per_s);
        put(r, "onecpu.direct.cpu_us_per_conn", &self.direct_us);
        put(r, "onecpu.lb.cpu_us_per_conn", &self.lb_us);
        put(r, "onecpu.haproxy.cpu_us_per_conn", &self.hp_us);
        // The headline per-connection cost of each balancer.
        put(r, "lb.cpu_us_per_conn", &lb_over);
        put(r, "haproxy.cpu_us_per_conn", &hp_over);
        let div = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        put(r, "lb_vs_haproxy.cpu_per_conn", &div(&lb_over, &hp_over));
        let per_core = |v: &[f64]| -> Vec<f64> { v.iter().map(|us| 1e6 / us).collect() };
        put(r, "lb.conn_per_s_per_core", &per_core(&lb_over));
        put(r, "haproxy.conn_per_s_per_core", &per_core(&hp_over));
        put(r, "lb_vs_haproxy.conn_per_s_per_core", &div(&hp_over, &lb_over));
        let ratio: Vec<f64> = self.lb_per_s.iter().zip(&self.hp_per_s).map(|(a, b)| a / b).collect();
        put(r, "onecpu.lb_vs_haproxy.conn_per_s", &ratio);
    }
}
