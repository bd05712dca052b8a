"""A verifying receiver: audits what a fleet of mocks actually delivered.

``Stats`` (pure counting), ``HttpReceiver`` / ``MqttReceiver`` (the edges) and
``Receiver`` (both around one ``Stats``, in a background thread) are the
public API; ``mockfleet receive`` is the command-line front end.
"""

from mockfleet.tower.receiver.mqtt_client import MqttConfig
from mockfleet.tower.receiver.service import Bound, Receiver, ReceiverStartError
from mockfleet.tower.receiver.stats import EnvelopeFields, Stats

__all__ = ["Bound", "EnvelopeFields", "MqttConfig", "Receiver", "ReceiverStartError", "Stats"]
