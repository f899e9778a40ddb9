"""Operations as code, reconciled by Dagster."""
