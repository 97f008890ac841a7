BEGIN;
SELECT plan(2);
SELECT has_schema('stacker');
SELECT has_table('stacker', 'commands', 'commands exists');
SELECT * FROM finish();
ROLLBACK;
