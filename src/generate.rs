//! A synthetic merchant tenant, generated with a fixed seed, for benchmarks
//! and for comparing segmentd with SQL engines on the same data.
//!
//! At scale 1 the tenant has 10 million customers: states weighted by the
//! 2020 US census with time zones that fit them, about 60% opted in, 200
//! tags and 50 Klaviyo lists of skewed popularity, answers to three
//! experiences, lifetime spend with a long tail and creation dates over
//! five years. Its two years of history hold about 30 million events:
//! orders (busier on weekends and before Christmas), broadcast messages on
//! Tuesdays and Fridays to opted-in customers, clicks on those broadcasts,
//! and abandoned carts. A few customers generate most events.
//!
//! Every value is a pure function of the seed and the record's index, so
//! the same tenant comes out whatever the output (events-jsonl for
//! `segmentd import`, CSV tables for SQL engines, or batches handed to the
//! engine in process) and in whatever order records are asked for.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{GenerateArgs, GenerateFormat};
use crate::engine::types::{CustomerUpdate, EventData, NewEvent};
use crate::time::Seconds;

const DAY: Seconds = 86_400;
/// Days of event history before `end`.
pub const HISTORY_DAYS: i64 = 730;
/// Days over which customers were created.
const CREATION_DAYS: i64 = 5 * 365;
/// Customers at scale 1.
pub const FULL_SCALE_CUSTOMERS: u64 = 10_000_000;
/// 2026-12-01T00:00:00Z: the end of the generated history, and the `as_of`
/// that benchmarks evaluate at.
pub const DEFAULT_END: Seconds = 1_796_083_200;

/// Events per customer, by kind, at any scale.
const ORDERS_PER_CUSTOMER: f64 = 1.2;
const MESSAGES_PER_CUSTOMER: f64 = 1.2;
const CLICKS_PER_CUSTOMER: f64 = 0.24;
const CARTS_PER_CUSTOMER: f64 = 0.24;

/// A state: code, 2020 census population in thousands, main time zone, and
/// a second zone with its share in percent where the state is split.
type State = (&'static str, u32, &'static str, Option<(&'static str, u64)>);

/// The 50 states and DC.
const STATES: [State; 51] = [
    ("CA", 39538, "America/Los_Angeles", None),
    ("TX", 29146, "America/Chicago", Some(("America/Denver", 2))),
    (
        "FL",
        21538,
        "America/New_York",
        Some(("America/Chicago", 5)),
    ),
    ("NY", 20201, "America/New_York", None),
    ("PA", 13003, "America/New_York", None),
    ("IL", 12813, "America/Chicago", None),
    ("OH", 11799, "America/New_York", None),
    ("GA", 10712, "America/New_York", None),
    ("NC", 10439, "America/New_York", None),
    ("MI", 10077, "America/Detroit", None),
    ("NJ", 9289, "America/New_York", None),
    ("VA", 8631, "America/New_York", None),
    ("WA", 7705, "America/Los_Angeles", None),
    ("AZ", 7152, "America/Phoenix", None),
    ("MA", 7030, "America/New_York", None),
    (
        "TN",
        6911,
        "America/Chicago",
        Some(("America/New_York", 35)),
    ),
    (
        "IN",
        6786,
        "America/Indiana/Indianapolis",
        Some(("America/Chicago", 10)),
    ),
    ("MD", 6177, "America/New_York", None),
    ("MO", 6154, "America/Chicago", None),
    ("WI", 5894, "America/Chicago", None),
    ("CO", 5774, "America/Denver", None),
    ("MN", 5706, "America/Chicago", None),
    ("SC", 5119, "America/New_York", None),
    ("AL", 5024, "America/Chicago", None),
    ("LA", 4658, "America/Chicago", None),
    (
        "KY",
        4506,
        "America/New_York",
        Some(("America/Chicago", 30)),
    ),
    (
        "OR",
        4237,
        "America/Los_Angeles",
        Some(("America/Boise", 2)),
    ),
    ("OK", 3959, "America/Chicago", None),
    ("CT", 3606, "America/New_York", None),
    ("UT", 3272, "America/Denver", None),
    ("IA", 3190, "America/Chicago", None),
    ("NV", 3105, "America/Los_Angeles", None),
    ("AR", 3012, "America/Chicago", None),
    ("MS", 2961, "America/Chicago", None),
    ("KS", 2938, "America/Chicago", Some(("America/Denver", 3))),
    ("NM", 2118, "America/Denver", None),
    ("NE", 1962, "America/Chicago", Some(("America/Denver", 10))),
    (
        "ID",
        1839,
        "America/Boise",
        Some(("America/Los_Angeles", 20)),
    ),
    ("WV", 1794, "America/New_York", None),
    ("HI", 1455, "Pacific/Honolulu", None),
    ("NH", 1377, "America/New_York", None),
    ("ME", 1362, "America/New_York", None),
    ("RI", 1097, "America/New_York", None),
    ("MT", 1084, "America/Denver", None),
    ("DE", 990, "America/New_York", None),
    ("SD", 887, "America/Chicago", Some(("America/Denver", 25))),
    ("ND", 779, "America/Chicago", Some(("America/Denver", 10))),
    ("AK", 733, "America/Anchorage", None),
    ("DC", 690, "America/New_York", None),
    ("VT", 643, "America/New_York", None),
    ("WY", 577, "America/Denver", None),
];

/// The experiences customers answer: (experience, question, answers, percent
/// of customers who answer).
const QUESTIONS: [(&str, &str, &[&str], u64); 5] = [
    (
        "welcome",
        "birthday-month",
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        12,
    ),
    ("fit-quiz", "size", &["XS", "S", "M", "L", "XL"], 8),
    ("fit-quiz", "fit", &["slim", "regular", "relaxed"], 6),
    ("review", "rating", &["1", "2", "3", "4", "5"], 5),
    ("review", "recommend", &["yes", "no"], 4),
];

pub const TAGS: usize = 200;
pub const LISTS: usize = 50;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub customers: u64,
    pub seed: u64,
    /// The end of the history; no event or creation is later.
    pub end: Seconds,
}

impl Config {
    /// A tenant `scale` times the full ten million customers (at least one).
    pub fn scaled(scale: f64, seed: u64) -> Config {
        Config {
            customers: ((FULL_SCALE_CUSTOMERS as f64 * scale).round() as u64).max(1),
            seed,
            end: DEFAULT_END,
        }
    }

    pub fn orders(&self) -> u64 {
        (self.customers as f64 * ORDERS_PER_CUSTOMER) as u64
    }
    pub fn messages(&self) -> u64 {
        (self.customers as f64 * MESSAGES_PER_CUSTOMER) as u64
    }
    pub fn clicks(&self) -> u64 {
        (self.customers as f64 * CLICKS_PER_CUSTOMER) as u64
    }
    pub fn carts(&self) -> u64 {
        (self.customers as f64 * CARTS_PER_CUSTOMER) as u64
    }
}

/// One customer with the facts a SQL schema stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub index: u64,
    pub state: Option<&'static str>,
    pub time_zone: Option<&'static str>,
    pub opted_in: bool,
    pub tags: Vec<String>,
    pub lists: Vec<String>,
    pub lifetime_spend_cents: Option<u64>,
    pub create_time: Seconds,
}

impl Customer {
    /// The customer as an upsert, as an importer would send it.
    pub fn update(&self) -> CustomerUpdate {
        CustomerUpdate {
            customer_id: customer_id(self.index),
            state: self.state.map(|s| Some(s.to_owned())),
            time_zone: self.time_zone.map(|z| Some(z.to_owned())),
            tags: Some(self.tags.clone()),
            klaviyo_lists: Some(self.lists.clone()),
            lifetime_spend_cents: self.lifetime_spend_cents,
            opted_in: Some(self.opted_in),
            create_time: Some(self.create_time),
            ..CustomerUpdate::default()
        }
    }
}

/// The customer id of index `i`.
pub fn customer_id(i: u64) -> String {
    format!("c{i}")
}

/// The tag of rank `i` (0 is the most popular).
pub fn tag(i: usize) -> String {
    format!("tag-{i:03}")
}

/// The Klaviyo list of rank `i`.
pub fn list(i: usize) -> String {
    format!("list-{i:02}")
}

/// The tenant's tables of weights, built once.
pub struct Generator {
    config: Config,
    states: Cumulative,
    tags: Cumulative,
    lists: Cumulative,
    order_days: Cumulative,
    cart_days: Cumulative,
    /// Days back from `end` that are Tuesdays or Fridays.
    broadcast_days: Vec<i64>,
}

/// Which stream a record's random numbers come from.
#[derive(Clone, Copy)]
enum Stream {
    Customer = 1,
    Order = 2,
    Message = 3,
    Click = 4,
    Cart = 5,
    Answer = 6,
}

impl Generator {
    pub fn new(config: Config) -> Generator {
        let states = Cumulative::new(STATES.iter().map(|s| s.1 as f64));
        let tags = Cumulative::new((0..TAGS).map(|i| 1.0 / (i as f64 + 1.0).powf(1.1)));
        let lists = Cumulative::new((0..LISTS).map(|i| 1.0 / (i as f64 + 1.0).powf(0.9)));
        let day_weight = |back: i64, season: f64| {
            let date = chrono::DateTime::from_timestamp(config.end - back * DAY, 0)
                .unwrap_or_default()
                .date_naive();
            use chrono::Datelike;
            let weekend = matches!(date.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
            let holidays = (date.month() == 11 && date.day() >= 20)
                || (date.month() == 12 && date.day() <= 24);
            // The store grows: the latest day is twice as busy as the first.
            let growth = 2.0 - back as f64 / HISTORY_DAYS as f64;
            growth * (1.0 + if weekend { 0.3 } else { 0.0 } + if holidays { season } else { 0.0 })
        };
        let order_days = Cumulative::new((0..HISTORY_DAYS).map(|back| day_weight(back, 1.5)));
        let cart_days = Cumulative::new((0..HISTORY_DAYS).map(|back| day_weight(back, 0.8)));
        let broadcast_days = (0..HISTORY_DAYS)
            .filter(|back| {
                let date = chrono::DateTime::from_timestamp(config.end - back * DAY, 0)
                    .unwrap_or_default()
                    .date_naive();
                use chrono::Datelike;
                matches!(date.weekday(), chrono::Weekday::Tue | chrono::Weekday::Fri)
            })
            .collect();
        Generator {
            config,
            states,
            tags,
            lists,
            order_days,
            cart_days,
            broadcast_days,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn rng(&self, stream: Stream, index: u64) -> Rng {
        Rng::new(self.config.seed, stream as u64, index)
    }

    /// Customer `i` (0-based, below `config.customers`).
    pub fn customer(&self, i: u64) -> Customer {
        let mut rng = self.rng(Stream::Customer, i);
        // 7% have no usable address.
        let (state, time_zone) = if rng.below(100) < 7 {
            (None, None)
        } else {
            let (code, _, zone, second) = STATES[self.states.pick(rng.unit())];
            let zone = match second {
                Some((other, percent)) if rng.below(100) < percent => other,
                _ => zone,
            };
            (Some(code), Some(zone))
        };
        let opted_in = rng.below(100) < 60;
        let tags = self.picks(&mut rng, &self.tags, 35, 0.5, 8, tag);
        let lists = self.picks(&mut rng, &self.lists, 40, 0.6, 6, list);
        let lifetime_spend_cents =
            (rng.below(100) < 88).then(|| (rng.long_tail(12_000.0, 1.3) as u64).min(500_000_000));
        let back = (CREATION_DAYS as f64 * DAY as f64 * rng.unit().powf(1.5)) as i64;
        Customer {
            index: i,
            state,
            time_zone,
            opted_in,
            tags,
            lists,
            lifetime_spend_cents,
            create_time: self.config.end - back,
        }
    }

    /// None in `none_percent` of customers, else one plus a geometric count
    /// (continuing with probability `more`) of distinct picks, at most `max`.
    fn picks(
        &self,
        rng: &mut Rng,
        table: &Cumulative,
        none_percent: u64,
        more: f64,
        max: usize,
        name: fn(usize) -> String,
    ) -> Vec<String> {
        if rng.below(100) < none_percent {
            return Vec::new();
        }
        let mut count = 1;
        while count < max && rng.unit() < more {
            count += 1;
        }
        let mut chosen: Vec<usize> = Vec::with_capacity(count);
        for _ in 0..count {
            let pick = table.pick(rng.unit());
            if !chosen.contains(&pick) {
                chosen.push(pick);
            }
        }
        chosen.into_iter().map(name).collect()
    }

    /// A customer index with the skew of real activity: a few customers
    /// account for most events. The rank is scattered over the ids so that
    /// busy customers are not the first created.
    fn active_customer(&self, rng: &mut Rng) -> u64 {
        let n = self.config.customers;
        let rank = ((n as f64) * rng.unit().powf(2.2)) as u64 % n;
        // 2654435761 is prime and larger than any tenant here, so this
        // permutes 0..n.
        (rank as u128 * 2_654_435_761 % n as u128) as u64
    }

    fn time_on(&self, rng: &mut Rng, back: i64) -> Seconds {
        // Between 00:00:00 and 23:59:59 of the day `back` days before the
        // last one, never after `end`.
        let start = self.config.end - (back + 1) * DAY;
        start + rng.below(DAY as u64) as i64
    }

    /// Order `n`, below `config.orders()`.
    pub fn order(&self, n: u64) -> NewEvent {
        let mut rng = self.rng(Stream::Order, n);
        let customer = self.active_customer(&mut rng);
        let back = self.order_days.pick(rng.unit()) as i64;
        NewEvent {
            event_id: format!("o{n}"),
            customer_id: customer_id(customer),
            time: self.time_on(&mut rng, back),
            data: EventData::Order {
                value_cents: (rng.long_tail(4_500.0, 0.8) as u64).clamp(199, 2_000_000),
            },
        }
    }

    /// Message `n`: most go out with a broadcast, to opted-in customers;
    /// the rest are flow messages on any day.
    pub fn message(&self, n: u64) -> NewEvent {
        let mut rng = self.rng(Stream::Message, n);
        let back = if rng.below(100) < 85 {
            self.broadcast_days[rng.below(self.broadcast_days.len() as u64) as usize]
        } else {
            rng.below(HISTORY_DAYS as u64) as i64
        };
        let mut customer = rng.below(self.config.customers);
        for _ in 0..8 {
            if self.opted_in(customer) {
                break;
            }
            customer = rng.below(self.config.customers);
        }
        NewEvent {
            event_id: format!("m{n}"),
            customer_id: customer_id(customer),
            time: self.time_on(&mut rng, back),
            data: EventData::Message,
        }
    }

    /// Click `n`, on a broadcast's link, on the day it went out or the next.
    pub fn click(&self, n: u64) -> NewEvent {
        let mut rng = self.rng(Stream::Click, n);
        let day = self.broadcast_days[rng.below(self.broadcast_days.len() as u64) as usize];
        let customer = self.active_customer(&mut rng);
        let back = if rng.below(100) < 80 || day == 0 {
            day
        } else {
            day - 1
        };
        NewEvent {
            event_id: format!("k{n}"),
            customer_id: customer_id(customer),
            time: self.time_on(&mut rng, back),
            data: EventData::Click {
                broadcast_id: self.broadcast_id(day),
            },
        }
    }

    /// The id of the broadcast sent `back` days before the last day.
    pub fn broadcast_id(&self, back: i64) -> String {
        let date = chrono::DateTime::from_timestamp(self.config.end - (back + 1) * DAY, 0)
            .unwrap_or_default()
            .date_naive();
        format!("b-{date}")
    }

    /// Abandoned cart `n`.
    pub fn cart(&self, n: u64) -> NewEvent {
        let mut rng = self.rng(Stream::Cart, n);
        let customer = self.active_customer(&mut rng);
        let back = self.cart_days.pick(rng.unit()) as i64;
        NewEvent {
            event_id: format!("a{n}"),
            customer_id: customer_id(customer),
            time: self.time_on(&mut rng, back),
            data: EventData::AbandonedCart {
                value_cents: (rng.long_tail(6_000.0, 0.7) as u64).clamp(99, 1_000_000),
            },
        }
    }

    /// The answers customer `i` gave: at most one per question, some days
    /// after the customer was created.
    pub fn answers(&self, i: u64) -> Vec<NewEvent> {
        let mut rng = self.rng(Stream::Answer, i);
        let created = self.customer_created(i);
        let mut answers = Vec::new();
        for (q, (experience, question, choices, percent)) in QUESTIONS.iter().enumerate() {
            if rng.below(100) >= *percent {
                continue;
            }
            let answer = choices[rng.below(choices.len() as u64) as usize];
            let time = (created + rng.below(30 * DAY as u64) as i64).min(self.config.end - 1);
            answers.push(NewEvent {
                event_id: format!("q{i}-{q}"),
                customer_id: customer_id(i),
                time,
                data: EventData::Answer {
                    experience_id: (*experience).to_owned(),
                    question_id: (*question).to_owned(),
                    answer: answer.to_owned(),
                },
            });
        }
        answers
    }

    fn opted_in(&self, i: u64) -> bool {
        self.customer(i).opted_in
    }

    fn customer_created(&self, i: u64) -> Seconds {
        self.customer(i).create_time
    }

    /// Every event, kind after kind: orders, messages, clicks, carts, then
    /// answers customer by customer.
    pub fn events(&self) -> impl Iterator<Item = NewEvent> + '_ {
        let c = &self.config;
        (0..c.orders())
            .map(|n| self.order(n))
            .chain((0..c.messages()).map(|n| self.message(n)))
            .chain((0..c.clicks()).map(|n| self.click(n)))
            .chain((0..c.carts()).map(|n| self.cart(n)))
            .chain((0..c.customers).flat_map(|i| self.answers(i)))
    }
}

/// `segmentd generate`: writes the files, or the data directory.
pub fn run(args: GenerateArgs) -> Result<(), String> {
    let mut config = Config::scaled(args.scale, args.seed);
    if let Some(customers) = args.customers {
        config.customers = customers;
    }
    let generator = Generator::new(config);
    let total =
        config.customers + config.orders() + config.messages() + config.clicks() + config.carts();
    tracing::info!(
        customers = config.customers,
        events = total - config.customers,
        seed = config.seed,
        "generating a tenant (plus answers, about 0.35 a customer)"
    );
    let mut progress = Progress::new(total);
    if let Some(data) = &args.data {
        return write_engine(
            &generator,
            data,
            &args.tenant,
            args.batch as usize,
            &mut progress,
        );
    }
    let Some(out) = &args.out else {
        return Err("give --out or --data".to_owned());
    };
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut files = Files::create(out, args.format)?;
    for i in 0..config.customers {
        files.customer(&generator.customer(i))?;
        progress.tick();
    }
    for event in generator.events() {
        files.event(&event)?;
        if !matches!(event.data, EventData::Answer { .. }) {
            progress.tick();
        }
    }
    files.finish()?;
    progress.done();
    Ok(())
}

/// Writes the tenant through the engine: customers, then events, in
/// batches made on a second thread while the first is written.
fn write_engine(
    generator: &Generator,
    data: &Path,
    tenant: &str,
    batch: usize,
    progress: &mut Progress,
) -> Result<(), String> {
    use crate::engine::{Engine, types::NewEvent};
    enum Batch {
        Customers(Vec<CustomerUpdate>),
        Events(Vec<NewEvent>),
    }
    let engine = Engine::open(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let end = generator.config().end;
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(4);
        scope.spawn(move || {
            let customers = generator.config().customers;
            for start in (0..customers).step_by(batch) {
                let updates = (start..(start + batch as u64).min(customers))
                    .map(|i| generator.customer(i).update())
                    .collect();
                if sender.send(Batch::Customers(updates)).is_err() {
                    return;
                }
            }
            let mut events = generator.events().peekable();
            while events.peek().is_some() {
                let chunk: Vec<NewEvent> = events.by_ref().take(batch).collect();
                if sender.send(Batch::Events(chunk)).is_err() {
                    return;
                }
            }
        });
        for batch in receiver {
            let written = match batch {
                Batch::Customers(updates) => {
                    let n = updates.len();
                    engine.upsert_customers(tenant, updates, end).map(|_| n)
                }
                Batch::Events(events) => {
                    let n = events
                        .iter()
                        .filter(|e| !matches!(e.data, EventData::Answer { .. }))
                        .count();
                    engine.record_events(tenant, events, end).map(|_| n)
                }
            };
            let written = written.map_err(|e| format!("writing tenant `{tenant}`: {e}"))?;
            progress.add(written as u64);
        }
        Ok::<(), String>(())
    })?;
    engine
        .checkpoint_all(end)
        .map_err(|e| format!("checkpointing tenant `{tenant}`: {e}"))?;
    engine.flush().map_err(|e| e.to_string())?;
    progress.done();
    Ok(())
}

/// The output files of `--out`.
struct Files {
    jsonl: Option<BufWriter<std::fs::File>>,
    csv: Option<CsvTables>,
    /// Events written so far: the order the SQL side breaks time ties by.
    sequence: u64,
}

/// The normalised tables a SQL engine loads (see `scripts/side-by-side.py`).
struct CsvTables {
    customers: BufWriter<std::fs::File>,
    tags: BufWriter<std::fs::File>,
    lists: BufWriter<std::fs::File>,
    events: BufWriter<std::fs::File>,
    answers: BufWriter<std::fs::File>,
}

fn create(dir: &Path, name: &str, header: &str) -> Result<BufWriter<std::fs::File>, String> {
    let path = dir.join(name);
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    if !header.is_empty() {
        writeln!(writer, "{header}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(writer)
}

fn io(error: std::io::Error) -> String {
    format!("writing the generated files: {error}")
}

fn rfc3339(time: Seconds) -> String {
    chrono::DateTime::from_timestamp(time, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A JSON array of generated names (which never need escaping).
fn json_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("\"{item}\"")).collect();
    format!("[{}]", quoted.join(","))
}

impl Files {
    fn create(dir: &Path, format: GenerateFormat) -> Result<Files, String> {
        let jsonl = match format {
            GenerateFormat::All | GenerateFormat::Jsonl => Some(create(dir, "tenant.jsonl", "")?),
            GenerateFormat::Csv => None,
        };
        let csv = match format {
            GenerateFormat::All | GenerateFormat::Csv => Some(CsvTables {
                customers: create(
                    dir,
                    "customers.csv",
                    "id,state,time_zone,opted_in,lifetime_spend_cents,create_time",
                )?,
                tags: create(dir, "customer_tags.csv", "customer_id,tag")?,
                lists: create(dir, "customer_lists.csv", "customer_id,list")?,
                events: create(
                    dir,
                    "events.csv",
                    "seq,customer_id,kind,time,value_cents,broadcast_id",
                )?,
                answers: create(
                    dir,
                    "answers.csv",
                    "seq,customer_id,experience,question,answer,time",
                )?,
            }),
            GenerateFormat::Jsonl => None,
        };
        Ok(Files {
            jsonl,
            csv,
            sequence: 0,
        })
    }

    fn customer(&mut self, c: &Customer) -> Result<(), String> {
        if let Some(out) = &mut self.jsonl {
            let mut fields = vec![format!("\"customer_id\":\"c{}\"", c.index)];
            if let (Some(state), Some(zone)) = (c.state, c.time_zone) {
                fields.push(format!("\"state\":\"{state}\",\"time_zone\":\"{zone}\""));
            }
            fields.push(format!("\"opted_in\":{}", c.opted_in));
            if !c.tags.is_empty() {
                fields.push(format!("\"tags\":{}", json_list(&c.tags)));
            }
            if !c.lists.is_empty() {
                fields.push(format!("\"klaviyo_lists\":{}", json_list(&c.lists)));
            }
            if let Some(cents) = c.lifetime_spend_cents {
                fields.push(format!("\"lifetime_spend_cents\":{cents}"));
            }
            fields.push(format!("\"create_time\":\"{}\"", rfc3339(c.create_time)));
            writeln!(out, "{{\"customer\":{{{}}}}}", fields.join(",")).map_err(io)?;
        }
        if let Some(csv) = &mut self.csv {
            let spend = c
                .lifetime_spend_cents
                .map(|cents| cents.to_string())
                .unwrap_or_default();
            writeln!(
                csv.customers,
                "{},{},{},{},{spend},{}",
                c.index,
                c.state.unwrap_or(""),
                c.time_zone.unwrap_or(""),
                c.opted_in,
                c.create_time
            )
            .map_err(io)?;
            for tag in &c.tags {
                writeln!(csv.tags, "{},{tag}", c.index).map_err(io)?;
            }
            for list in &c.lists {
                writeln!(csv.lists, "{},{list}", c.index).map_err(io)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, e: &NewEvent) -> Result<(), String> {
        self.sequence += 1;
        if let Some(out) = &mut self.jsonl {
            let kind = match &e.data {
                EventData::Order { value_cents } => {
                    format!("\"order\":{{\"value_cents\":{value_cents}}}")
                }
                EventData::Message => "\"message\":{}".to_owned(),
                EventData::Click { broadcast_id } => {
                    format!("\"click\":{{\"broadcast_id\":\"{broadcast_id}\"}}")
                }
                EventData::AbandonedCart { value_cents } => {
                    format!("\"abandoned_cart\":{{\"value_cents\":{value_cents}}}")
                }
                EventData::Answer {
                    experience_id,
                    question_id,
                    answer,
                } => format!(
                    "\"answer\":{{\"experience_id\":\"{experience_id}\",\
                     \"question_id\":\"{question_id}\",\"answer\":\"{answer}\"}}"
                ),
                EventData::OptIn => "\"opt_in\":{}".to_owned(),
                EventData::OptOut => "\"opt_out\":{}".to_owned(),
            };
            writeln!(
                out,
                "{{\"event\":{{\"event_id\":\"{}\",\"customer_id\":\"{}\",\"time\":\"{}\",{kind}}}}}",
                e.event_id,
                e.customer_id,
                rfc3339(e.time)
            )
            .map_err(io)?;
        }
        if let Some(csv) = &mut self.csv {
            // Customer ids are `c` and the index; the tables keep the index.
            let customer = &e.customer_id[1..];
            let seq = self.sequence;
            let time = e.time;
            match &e.data {
                EventData::Order { value_cents } => {
                    writeln!(csv.events, "{seq},{customer},order,{time},{value_cents},")
                }
                EventData::Message => writeln!(csv.events, "{seq},{customer},message,{time},,"),
                EventData::Click { broadcast_id } => {
                    writeln!(csv.events, "{seq},{customer},click,{time},,{broadcast_id}")
                }
                EventData::AbandonedCart { value_cents } => writeln!(
                    csv.events,
                    "{seq},{customer},abandoned_cart,{time},{value_cents},"
                ),
                EventData::Answer {
                    experience_id,
                    question_id,
                    answer,
                } => writeln!(
                    csv.answers,
                    "{seq},{customer},{experience_id},{question_id},{answer},{time}"
                ),
                EventData::OptIn | EventData::OptOut => Ok(()),
            }
            .map_err(io)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        let mut writers: Vec<BufWriter<std::fs::File>> = self.jsonl.into_iter().collect();
        if let Some(csv) = self.csv {
            writers.extend([csv.customers, csv.tags, csv.lists, csv.events, csv.answers]);
        }
        for mut writer in writers {
            writer.flush().map_err(io)?;
            writer.get_ref().sync_all().map_err(io)?;
        }
        Ok(())
    }
}

/// A line on standard error every few seconds: how far, how fast, how long
/// left. Counts customers and events, not answers.
struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    fn tick(&mut self) {
        self.add(1);
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / seconds.max(1e-6);
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(1e-6);
        eprintln!(
            "{:5.1}%  {} records  {rate:.0}/s  about {left:.0} s left",
            100.0 * self.done as f64 / self.total.max(1) as f64,
            self.done
        );
    }

    fn done(&self) {
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "done: {} customers and events in {seconds:.1} s ({:.0}/s)",
            self.done,
            self.done as f64 / seconds.max(1e-6)
        );
    }
}

/// Picks an index with probability proportional to its weight.
struct Cumulative(Vec<f64>);

impl Cumulative {
    fn new(weights: impl Iterator<Item = f64>) -> Cumulative {
        let mut total = 0.0;
        let mut sums: Vec<f64> = weights
            .map(|w| {
                total += w;
                total
            })
            .collect();
        for sum in &mut sums {
            *sum /= total;
        }
        Cumulative(sums)
    }

    /// The index whose share of the unit interval holds `u` (in [0, 1)).
    fn pick(&self, u: f64) -> usize {
        self.0
            .partition_point(|&sum| sum <= u)
            .min(self.0.len() - 1)
    }
}

/// SplitMix64, seeded from (seed, stream, index): a record's numbers do
/// not depend on any other record.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64, index: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xa076_1d64_78bd_642f));
        rng.0 ^= rng.next().wrapping_add(index);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform below `n` (n > 0); the bias of the modulo is below 2^-40 here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A log-normal value with median `median` and spread `sigma`: most
    /// values near the median, a long tail above it.
    fn long_tail(&mut self, median: f64, sigma: f64) -> f64 {
        // Box–Muller from two uniforms; 1 - u keeps the logarithm finite.
        let (u, v) = (1.0 - self.unit(), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        median * (sigma * normal).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_tenant() {
        let a = Generator::new(Config::scaled(0.0001, 7));
        let b = Generator::new(Config::scaled(0.0001, 7));
        let c = Generator::new(Config::scaled(0.0001, 8));
        assert_eq!(a.customer(17), b.customer(17));
        assert_eq!(
            a.events().collect::<Vec<_>>(),
            b.events().collect::<Vec<_>>()
        );
        assert_ne!(
            (0..50).map(|i| a.customer(i)).collect::<Vec<_>>(),
            (0..50).map(|i| c.customer(i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn shares_follow_the_design() {
        let generator = Generator::new(Config::scaled(0.002, 1));
        let n = generator.config().customers;
        let customers: Vec<Customer> = (0..n).map(|i| generator.customer(i)).collect();
        let share = |f: &dyn Fn(&Customer) -> bool| {
            customers.iter().filter(|c| f(c)).count() as f64 / n as f64
        };
        assert!((share(&|c| c.opted_in) - 0.60).abs() < 0.02);
        assert!((share(&|c| c.state.is_none()) - 0.07).abs() < 0.01);
        // California holds 39.5M of the 331M counted.
        let ca = share(&|c| c.state == Some("CA")) / 0.93;
        assert!((ca - 39_538.0 / 331_424.0).abs() < 0.01, "{ca}");
        // The most popular tag is far commoner than the 100th.
        let carrying = |t: &str| share(&|c| c.tags.iter().any(|x| x == t));
        assert!(carrying("tag-000") > 10.0 * carrying("tag-099"));
        for event in generator.events() {
            assert!(event.time < generator.config().end);
            assert!(
                event.time
                    >= generator.config().end - (HISTORY_DAYS + 1) * DAY - CREATION_DAYS * DAY
            );
        }
    }

    #[test]
    fn active_customers_are_a_permutation() {
        let generator = Generator::new(Config {
            customers: 1_000,
            seed: 3,
            end: DEFAULT_END,
        });
        let mut seen = std::collections::HashSet::new();
        for rank in 0..1_000u128 {
            seen.insert((rank * 2_654_435_761 % 1_000) as u64);
        }
        assert_eq!(seen.len(), 1_000);
        let mut rng = generator.rng(Stream::Order, 0);
        assert!((0..10_000).all(|_| generator.active_customer(&mut rng) < 1_000));
    }
}
