use resilience_runtime::resilient;

#[resilient(retries = 2, idempotent)]
struct Client {
    base_url: String,
}

fn main() {}
