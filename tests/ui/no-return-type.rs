use resilience_runtime::resilient;

#[resilient]
async fn notify() {}

fn main() {}
